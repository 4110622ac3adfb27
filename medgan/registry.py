"""One catalogue across sources, and a bounded LRU cache of loaded generators."""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from . import limits
from .errors import InvalidArgumentError, MedganError, UnknownModelError
from .sources import ImageGenerator, ModelInfo, Source
from .sources.hub import HubSource
from .sources.local import LocalSource
from .sources.medigan import MediganSource
from .validation import check_model_id

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS_DIR = PACKAGE_ROOT / "weights"


def env_paths(name: str) -> list[Path]:
    return [Path(p) for p in os.environ.get(name, "").split(os.pathsep) if p]


def max_loaded_default() -> int:
    """MEDGAN_MAX_LOADED_MODELS (default 8; a malformed value is a ConfigError naming it)."""
    return limits.max_loaded_models()


class Registry:
    def __init__(self, sources: list[Source], max_loaded: int | None = None):
        self.sources = list(sources)
        self.max_loaded = max_loaded or max_loaded_default()
        self._loaded: OrderedDict[str, tuple[str, ImageGenerator]] = OrderedDict()
        self._lock = threading.RLock()
        self.load_seconds: dict[str, float] = {}

    def list_models(self) -> list[ModelInfo]:
        seen: dict[str, ModelInfo] = {}
        for source in self.sources:
            for info in source.list_models():
                seen.setdefault(info.id, info)  # earlier sources win
        return list(seen.values())

    def _source_of(self, model_id: str) -> tuple[Source, ModelInfo]:
        model_id = check_model_id(model_id)
        models = self.list_models()
        for info in models:
            if info.id == model_id:
                return next(s for s in self.sources if s.name == info.source), info
        raise UnknownModelError(model_id, [m.id for m in models])

    def info(self, model_id: str) -> ModelInfo:
        return self._source_of(model_id)[1]

    def load(self, model_id: str) -> ImageGenerator:
        source, info = self._source_of(model_id)
        if not info.generatable:
            raise InvalidArgumentError(f"model {model_id!r} is {info.kind}; only noise-to-image models "
                                       "can be sampled from a seed")
        fingerprint = source.fingerprint(model_id)
        with self._lock:
            cached = self._loaded.get(model_id)
            if cached and cached[0] == fingerprint:
                self._loaded.move_to_end(model_id)
                return cached[1]
            self._loaded.pop(model_id, None)  # stale: its files changed on disk
        began = time.perf_counter()
        generator = source.load(model_id)  # outside the lock: loading one model must not block others
        with self._lock:
            self.load_seconds[model_id] = time.perf_counter() - began
            self._loaded[model_id] = (fingerprint, generator)
            self._loaded.move_to_end(model_id)
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return generator

    def loaded_ids(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


def default_sources(weights_dirs: list[str | Path] | None = None) -> list[Source]:
    folders = [*(weights_dirs or []), *env_paths("MEDGAN_WEIGHTS_DIRS"), DEFAULT_WEIGHTS_DIR]
    catalogues = [*env_paths("MEDGAN_HUB_CATALOGUE"), DEFAULT_WEIGHTS_DIR / "hub.json"]
    sources: list[Source] = [LocalSource(folders), HubSource(catalogues)]
    # Seam for further sources (medigan): each is optional and must not break the others.
    for factory in _EXTRA_SOURCES:
        try:
            sources.append(factory())
        except MedganError:
            pass
    return sources


_EXTRA_SOURCES: list = [MediganSource.from_env]  # medigan home: MEDGAN_MEDIGAN_HOME; off: MEDGAN_MEDIGAN=0
_default: Registry | None = None
_default_lock = threading.Lock()


def get_registry() -> Registry:
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry(default_sources())
        return _default
