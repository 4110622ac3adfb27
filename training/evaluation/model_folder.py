"""What the evaluation and the downstream study share about the model they measure: finding it, writing their
JSON records, the versions a measurement was made with, and config.json's metrics with the card re-rendered."""
from __future__ import annotations

import importlib.metadata as md
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import medgan
from medgan.config import ModelConfig
from medgan.errors import MedganError
from medgan.files import atomic_write
from medgan.generator import Generator


@dataclass
class Target:
    generator: Any
    model_id: str
    folder: Path | None      # local model folder (written to), or None
    source: str              # "folder", or the registry source that listed the id


def resolve_model(spec: str, *, device: str | None = None, local_only: bool = False) -> Target:
    """A model folder path, or a medgan model id; a local model's folder is written to, other sources' are not.
    `local_only`: refuse a model of another source (the study writes into the folder it measured)."""
    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        gen = Generator.from_folder(path, device=device)
        return Target(gen, gen.id, path, "folder")
    registry = medgan.get_registry()
    try:
        info = registry.info(spec)
    except MedganError as exc:
        raise MedganError(f"{spec!r} is neither a model folder nor a known model id ({exc})") from None
    if info.source != "local":
        if local_only:
            raise MedganError(f"{spec!r} comes from the {info.source} source; pass a local model folder")
        return Target(registry.load(spec), spec, None, info.source)
    folder = next(s for s in registry.sources if s.name == "local").folder(spec)
    return Target(Generator.from_folder(folder, device=device), spec, folder, info.source)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write atomically (a reader never sees half a record); numpy values become plain JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def versions(*packages: str) -> dict[str, str]:
    """Python's version, each installed distribution's and medgan's."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    out["medgan"] = medgan.__version__
    return out


def record_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    """Merge `metrics` into config.json's, then re-render the card (which reads the records beside it);
    returns the card's path."""
    from ..publish.card import write_card  # huggingface_hub is slow to import; only this step needs it

    config = ModelConfig.load(folder)
    config.metrics = {**config.metrics, **metrics}
    config.save(folder)
    return write_card(folder)
