"""Run one medigan model in a worker process (worker.py beside this file, cwd = the medigan home) and read its
result: a uint8 .npz loaded with allow_pickle=False, or an error report turned into a MedganError."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ... import limits
from ...errors import GenerationError, SourceUnavailableError
from .catalogue import is_offline
from .entries import PREFIX, is_url, link_host, package_present

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]  # folder holding the `medgan` package
WORKER = Path(__file__).resolve().parent / "worker.py"  # run as a script, not imported here


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything the model's code spawned
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _redact(text: str, home: Path, work: Path) -> str:
    """Foreign error text without server-side paths (the UI shows it)."""
    for path, alias in ((work, "<worker dir>"), (home, "<medigan home>"), (REPO_ROOT, "<app>")):
        text = text.replace(str(path.resolve()), alias).replace(str(path), alias)
    return text[:400]


def preflight(home: Path, model_id: str, entry: dict[str, Any]) -> None:
    """Fail fast, before any process starts, when the model cannot run here: its package is absent and this
    server is offline (it downloads on first use, which needs internet), its package file is missing, or
    medigan is not installed."""
    label = PREFIX + model_id
    execution = entry.get("execution") or {}
    if not package_present(home, model_id, execution):
        link = execution.get("package_link")
        if is_url(link) and is_offline():
            raise SourceUnavailableError(f"model {label!r} downloads on first use (needs internet): its package is "
                                         "not downloaded yet and this server is offline (MEDGAN_OFFLINE / "
                                         f"HF_HUB_OFFLINE); it comes from {link_host(link)}")
        if not is_url(link) and not (link and Path(str(link)).is_file()):
            raise SourceUnavailableError(f"model {label!r}: its package is not in the medigan home and its "
                                         "package_link is not a readable file")
    if importlib_find("medigan") is None:
        raise SourceUnavailableError("medigan is not installed (pip install medigan==1.0.0 'setuptools<81')")


def run_worker(home: Path, model_id: str, entry: dict[str, Any], count: int, seed: int, start: int = 0,
               timeout_s: float | None = None, startup_s: float | None = None) -> tuple[np.ndarray, dict]:
    """Run one medigan model in a worker process (WORKER) and return (uint8 images, meta).

    `timeout_s` (MEDGAN_MEDIGAN_TIMEOUT_S, default 120) bounds the model's own code: package set-up
    (download, unzip, import) and generate(); it starts once the worker has imported torch and medigan,
    which `startup_s` (MEDGAN_MEDIGAN_STARTUP_S, default 120) bounds separately.
    """
    label = PREFIX + model_id
    timeout_s = limits.medigan_timeout_s() if timeout_s is None else timeout_s
    startup_s = limits.medigan_startup_s() if startup_s is None else startup_s
    execution = entry.get("execution") or {}
    preflight(home, model_id, entry)
    work = Path(tempfile.mkdtemp(prefix="medgan-medigan-"))
    try:
        request = {"model_id": model_id, "count": count, "seed": seed, "start": start, "home": str(home),
                   "out": str(work / "images.npz"), "meta": str(work / "meta.json"),
                   "error": str(work / "error.json"), "ready": str(work / "ready"),
                   "output_path": str(work / "output"), "offline": is_offline(),
                   "package_present": package_present(home, model_id, execution)}
        (work / "request.json").write_text(json.dumps(request))
        env = {**os.environ, "MPLBACKEND": "Agg", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        with open(work / "worker.log", "wb") as logf:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(work / "request.json")],
                                    cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        began, ready_at = time.monotonic(), None
        while True:
            try:
                proc.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if ready_at is None and (work / "ready").exists():
                ready_at = now
            if ready_at is None and now - began > startup_s:
                _kill_group(proc)
                raise GenerationError(f"model {label!r}: the medigan worker did not start within {startup_s:g} s")
            if ready_at is not None and now - ready_at > timeout_s:
                _kill_group(proc)
                raise GenerationError(f"model {label!r}: generation timed out after {timeout_s:g} s "
                                      "(MEDGAN_MEDIGAN_TIMEOUT_S); the worker was stopped")
        _kill_group(proc)  # anything the model left running in the background
        return _collect(work, proc.returncode, label, home, count)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def importlib_find(name: str):
    import importlib.util
    try:
        return importlib.util.find_spec(name)  # looks on sys.path; runs none of the package's code
    except (ImportError, ValueError):
        return None


def _collect(work: Path, returncode: int | None, label: str, home: Path, count: int
             ) -> tuple[np.ndarray, dict]:
    error = work / "error.json"
    if error.is_file():
        try:
            err = json.loads(error.read_text())
        except (OSError, ValueError):
            err = {"kind": "error", "message": "the worker wrote an unreadable error report"}
        message = _redact(str(err.get("message", "")), home, work)
        if err.get("kind") == "missing_deps":
            raise SourceUnavailableError(f"model {label!r} needs packages that are not installed: "
                                         f"{', '.join(err.get('missing', []))}. Install them (run-time installs "
                                         "are off), then retry.")
        if err.get("kind") == "unavailable":
            raise SourceUnavailableError(f"model {label!r} is not available: {message}")
        raise GenerationError(f"model {label!r} failed ({err.get('stage', '?')}): {message}")
    out = work / "images.npz"
    if returncode != 0 or not out.is_file():
        logged = work / "worker.log"
        tail = logged.read_bytes()[-1500:].decode(errors="replace") if logged.exists() else ""
        log.warning("medigan worker for %s exited with %s; log tail:\n%s", label, returncode, tail)
        how = f"was killed by signal {-returncode}" if returncode and returncode < 0 else \
            f"exited with code {returncode} without a result"
        raise GenerationError(f"model {label!r}: the medigan worker {how} (the model's code crashed or exited)")
    try:
        with np.load(out, allow_pickle=False) as data:  # never unpickle what foreign code produced
            images = data["images"]
        meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    except (OSError, ValueError, KeyError) as exc:
        raise GenerationError(f"model {label!r}: the worker's result is unreadable ({type(exc).__name__})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise GenerationError(f"model {label!r}: the worker returned {images.dtype} {images.shape}, "
                              "not uint8 [n, H, W] or [n, H, W, 3]")
    if len(images) != count:
        raise GenerationError(f"model {label!r}: asked for {count} images, the model returned {len(images)}")
    return images, meta if isinstance(meta, dict) else {}
