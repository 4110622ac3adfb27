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
from .catalogue import CONFIG_REL, add_to_catalogue, default_home, read_catalogue, refresh_catalogue
from .entries import PREFIX, classify, entry_revision, info_from_entry
from .snapshot import load_snapshot
from .runner import preflight, run_worker

log = logging.getLogger(__name__)

_REFRESH_TRIED: dict[str, float] = {}  # home -> when this process last tried to download the catalogue
_REGISTER_LOCK = threading.Lock()  # global.json is read-modified-written when a snapshot entry is first run


# --- the source --------------------------------------------------------------------------------------

class MediganSource:
    """Models of a medigan home as `medigan:<model_id>`, plus those of the catalogue snapshot shipped with medgan
    (snapshot.py) that the home's global.json lacks. `notice` says when the snapshot stands in for it."""

    name = "medigan"

    def __init__(self, home: str | Path | None = None, *, refresh: bool = True, snapshot: bool = True):
        self.home = Path(home) if home else default_home()
        self.refresh, self.snapshot = refresh, snapshot
        self.notice = ""
        self.snapshot_only: frozenset[str] = frozenset()
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
        """{model_id: entry}: the home's global.json over the shipped snapshot (global.json wins per id).

        `snapshot_only` holds the ids listed from the snapshot alone; `notice` says when the snapshot stands in
        for a missing or unreadable global.json."""
        if self.refresh and not self._refreshed:
            self._refreshed = True
            key = str(self.home.resolve())
            if time.time() - _REFRESH_TRIED.get(key, 0.0) > 3600:  # once per process and hour, per home
                _REFRESH_TRIED[key] = time.time()
                refresh_catalogue(self.home)
        home, problem = self._home_catalogue()
        snapshot = load_snapshot() if self.snapshot else {}
        self.snapshot_only = frozenset(snapshot) - frozenset(home)
        if problem and snapshot:
            self.notice = (f"{problem}; listing the snapshot of medigan's catalogue shipped with MedGAN Studio "
                           f"({len(snapshot)} models, facts from medigan); each package downloads on first use "
                           "(needs internet).")
        elif problem:
            self.notice = f"{problem}; medigan models are not listed."
        else:
            self.notice = ""
        return {**snapshot, **home}

    def _home_catalogue(self) -> tuple[dict[str, dict[str, Any]], str]:
        """The home's global.json (cached by mtime and size) and, when it cannot be used, why."""
        path = self.home / CONFIG_REL
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            self._cache = None
            return {}, ("no medigan catalogue (config/global.json) in the medigan home yet (MEDGAN_MEDIGAN_HOME; "
                        "it is downloaded when online)")
        if self._cache and self._cache[0] == stamp:
            return self._cache[1], ""
        try:
            data = read_catalogue(self.home)
        except ValueError as exc:
            return {}, f"the medigan home's catalogue is unreadable ({exc})"
        self._cache = (stamp, data)
        return data, ""

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
        return MediganGenerator(self.home, bare, entry, lock, from_snapshot=bare in self.snapshot_only)

    def fingerprint(self, model_id: str) -> str:
        return entry_revision(self.entry(model_id)[1])


class MediganGenerator:
    """`generate(count, seed)` for one medigan model, each call in a fresh worker subprocess."""

    def __init__(self, home: Path, model_id: str, entry: dict[str, Any], lock: threading.Lock | None = None,
                 *, from_snapshot: bool = False):
        self.home, self.model_id, self.entry, self.from_snapshot = home, model_id, entry, from_snapshot
        self.id = PREFIX + model_id
        self.revision = entry_revision(entry)
        self.source = "medigan"
        self._lock = lock or threading.Lock()

    def generate(self, count: int = 16, seed: int = 0, *, start: int = 0, output_type: str = "pil"):
        count, seed = check_count(count), check_seed(seed)
        if output_type not in ("pil", "np"):
            raise InvalidArgumentError(f"output_type must be 'pil' or 'np' for medigan models, got {output_type!r}")
        with self._lock:  # one worker per model at a time: medigan unpacks into a shared folder
            if self.from_snapshot:
                self._register()
            images, _meta = run_worker(self.home, self.model_id, self.entry, count, seed, start)
        if output_type == "pil":
            from PIL import Image
            return [Image.fromarray(a) for a in images]
        return images

    def _register(self) -> None:
        """medigan (in the worker) reads the entry from the home's global.json: a model listed from the shipped
        snapshot alone is written there before its first run (after the fail-fast checks, so an offline server
        refuses at once and writes nothing)."""
        preflight(self.home, self.model_id, self.entry)
        with _REGISTER_LOCK:
            try:
                present = self.model_id in read_catalogue(self.home)
            except ValueError as exc:  # never overwrite a catalogue we cannot read
                raise SourceUnavailableError(f"model {self.id!r}: the medigan home's config/global.json is "
                                             f"unreadable ({exc}); fix or remove it") from None
            if not present:
                add_to_catalogue(self.home, {self.model_id: self.entry})
