"""MediganSource: the models of a medigan home as `medigan:<model_id>`; MediganGenerator runs one through the
worker (runner.run_worker), one call at a time per model."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ...errors import InvalidArgumentError, SourceUnavailableError, UnknownModelError
from ...validation import check_count, check_seed
from .. import NOISE_TO_IMAGE, ModelInfo
from .catalogue import CONFIG_REL, default_home, read_catalogue, refresh_catalogue
from .entries import PREFIX, classify, entry_revision, info_from_entry
from .runner import run_worker

log = logging.getLogger(__name__)

_REFRESH_TRIED: dict[str, float] = {}  # home -> when this process last tried to download the catalogue


# --- the source --------------------------------------------------------------------------------------

class MediganSource:
    """Models of a medigan home as `medigan:<model_id>`. `notice` says why nothing is listed, if so."""

    name = "medigan"

    def __init__(self, home: str | Path | None = None, *, refresh: bool = True):
        self.home = Path(home) if home else default_home()
        self.refresh = refresh
        self.notice = ""
        self._refreshed = False
        self._cache: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def from_env(cls) -> "MediganSource":
        """The default source; MEDGAN_MEDIGAN=0 (or off/false/no) leaves medigan out of the app."""
        if os.environ.get("MEDGAN_MEDIGAN", "").strip().lower() in ("0", "off", "false", "no"):
            raise SourceUnavailableError("the medigan source is disabled (MEDGAN_MEDIGAN=0)")
        return cls()

    def catalogue(self) -> dict[str, dict[str, Any]]:
        if self.refresh and not self._refreshed:
            self._refreshed = True
            key = str(self.home.resolve())
            if time.time() - _REFRESH_TRIED.get(key, 0.0) > 3600:  # once per process and hour, per home
                _REFRESH_TRIED[key] = time.time()
                refresh_catalogue(self.home)
        path = self.home / CONFIG_REL
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            self._cache = None
            self.notice = ("medigan catalogue not available: no config/global.json in the medigan home "
                           "(set MEDGAN_MEDIGAN_HOME; it is downloaded when online, or copy medigan's "
                           "global.json there). medigan models are not listed.")
            return {}
        if self._cache and self._cache[0] == stamp:
            return self._cache[1]
        try:
            data = read_catalogue(self.home)
        except ValueError as exc:
            self.notice = f"medigan catalogue is unreadable ({exc}); medigan models are not listed."
            return {}
        self.notice = ""
        self._cache = (stamp, data)
        return data

    def list_models(self) -> list[ModelInfo]:
        infos = []
        for model_id, entry in self.catalogue().items():
            try:
                infos.append(info_from_entry(model_id, entry, self.home))
            except Exception as exc:  # one odd entry must not hide the others
                log.warning("skipping medigan entry %r: %s", model_id, exc)
        return infos

    def entry(self, model_id: str) -> tuple[str, dict[str, Any]]:
        catalogue = self.catalogue()
        bare = model_id[len(PREFIX):] if model_id.startswith(PREFIX) else model_id
        if bare not in catalogue:
            raise UnknownModelError(model_id, [PREFIX + k for k in sorted(catalogue)])
        return bare, catalogue[bare]

    def load(self, model_id: str) -> "MediganGenerator":
        bare, entry = self.entry(model_id)
        kind = classify(entry)
        if kind != NOISE_TO_IMAGE:
            raise InvalidArgumentError(f"model {model_id!r} is {kind} (it needs an input image or mask); only "
                                       "noise-to-image models can be sampled from a seed")
        with self._locks_guard:
            lock = self._locks.setdefault(bare, threading.Lock())
        return MediganGenerator(self.home, bare, entry, lock)

    def fingerprint(self, model_id: str) -> str:
        return entry_revision(self.entry(model_id)[1])


class MediganGenerator:
    """`generate(count, seed)` for one medigan model, each call in a fresh worker subprocess."""

    def __init__(self, home: Path, model_id: str, entry: dict[str, Any], lock: threading.Lock | None = None):
        self.home, self.model_id, self.entry = home, model_id, entry
        self.id = PREFIX + model_id
        self.revision = entry_revision(entry)
        self.source = "medigan"
        self._lock = lock or threading.Lock()

    def generate(self, count: int = 16, seed: int = 0, *, start: int = 0, output_type: str = "pil"):
        count, seed = check_count(count), check_seed(seed)
        if output_type not in ("pil", "np"):
            raise InvalidArgumentError(f"output_type must be 'pil' or 'np' for medigan models, got {output_type!r}")
        with self._lock:  # one worker per model at a time: medigan unpacks into a shared folder
            images, _meta = run_worker(self.home, self.model_id, self.entry, count, seed, start)
        if output_type == "pil":
            from PIL import Image
            return [Image.fromarray(a) for a in images]
        return images
