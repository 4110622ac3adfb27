"""medigan's catalogue, `config/global.json` in a medigan home: read, merged into, refreshed from GitHub.

The "medigan home" (MEDGAN_MEDIGAN_HOME, default <MEDGAN_CACHE_DIR or ~/.cache/medgan>/medigan) is the folder
medigan itself expects as its working directory: `config/global.json` (the catalogue) and `models/<id>/…`
(unpacked model packages). Nothing here imports medigan or any model code.
"""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from ... import limits
from ...errors import InvalidArgumentError
from ...files import atomic_write

log = logging.getLogger(__name__)

CONFIG_URL = "https://raw.githubusercontent.com/RichardObi/medigan/main/config/global.json"  # what medigan uses
CONFIG_REL = Path("config") / "global.json"
MAX_CATALOGUE_BYTES = 20 << 20


def is_offline() -> bool:
    """True when MEDGAN_OFFLINE or HF_HUB_OFFLINE is set to anything but a false-ish value."""
    return any(os.environ.get(n, "").strip().lower() not in ("", "0", "false", "no", "off")
               for n in ("MEDGAN_OFFLINE", "HF_HUB_OFFLINE"))


def default_home() -> Path:
    if os.environ.get("MEDGAN_MEDIGAN_HOME"):
        return Path(os.environ["MEDGAN_MEDIGAN_HOME"]).expanduser()
    cache = os.environ.get("MEDGAN_CACHE_DIR") or Path.home() / ".cache" / "medgan"
    return Path(cache).expanduser() / "medigan"


def valid_catalogue(data: object) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(e, dict) and isinstance(e.get("execution"), dict) for e in data.values())


def read_catalogue(home: Path) -> dict[str, dict[str, Any]]:
    """global.json as {model_id: entry}; {} when missing; ValueError when unreadable or not medigan's schema."""
    path = home / CONFIG_REL
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {str(exc)[:120]}") from None
    if not valid_catalogue(data):
        raise ValueError("not a medigan catalogue (expected {model_id: {execution, selection, description}})")
    return data


def _write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def add_to_catalogue(home: str | Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Merge {model_id: entry} into the home's global.json (created if missing); returns its path."""
    home = Path(home)
    if not valid_catalogue(entries):
        raise InvalidArgumentError("entries must be {model_id: {execution: …, selection: …, description: …}}")
    try:
        current = read_catalogue(home)
    except ValueError:
        current = {}
    (home / "models").mkdir(parents=True, exist_ok=True)
    _write_json_atomic(home / CONFIG_REL, {**current, **entries})
    return home / CONFIG_REL


def refresh_catalogue(home: Path, url: str | None = None, timeout_s: float | None = None,
                      max_age_s: float | None = None) -> str:
    """Download medigan's global.json into the home when online and the cached copy is stale.

    Never when MEDGAN_OFFLINE / HF_HUB_OFFLINE is set. Entries only in the local copy (e.g. our own models
    registered with training.publish.export_medigan) are kept. Returns what happened, for logs.
    """
    if is_offline():
        return "offline"
    path = home / CONFIG_REL
    max_age_s = limits.medigan_refresh_s() if max_age_s is None else max_age_s
    try:
        if time.time() - path.stat().st_mtime < max_age_s:
            return "fresh"
    except OSError:
        pass
    url = url or os.environ.get("MEDGAN_MEDIGAN_CONFIG_URL") or CONFIG_URL
    timeout_s = limits.medigan_refresh_timeout_s() if timeout_s is None else timeout_s
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (https or a test URL)
            data = json.loads(response.read(MAX_CATALOGUE_BYTES + 1)[:MAX_CATALOGUE_BYTES])
    except Exception as exc:  # unreachable, DNS, timeout, bad JSON: keep the cache
        log.info("medigan catalogue not refreshed (%s); using the cached copy if any", type(exc).__name__)
        return f"failed: {type(exc).__name__}"
    if not valid_catalogue(data):
        return "failed: not a medigan catalogue"
    try:
        local = read_catalogue(home)
    except ValueError:
        local = {}
    _write_json_atomic(path, {**data, **{k: v for k, v in local.items() if k not in data}})
    return "refreshed"
