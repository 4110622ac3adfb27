"""What the app (and any other front end) does, without any UI: validated generate / export / listing.

app.py stays a thin layer of widgets over these functions; everything here raises MedganError subclasses
with messages that are safe to show to a remote user.
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import __version__, limits
from .errors import InvalidArgumentError
from .export import Provenance, check_format, file_stem, write_zip
from .registry import Registry, get_registry
from .sources import ModelInfo
from .validation import check_count, check_flag, check_model_id, check_seed

MAX_COUNT = limits.max_count()  # MEDGAN_MAX_COUNT
EXPORT_RETENTION_S = limits.export_retention_s()  # MEDGAN_EXPORT_RETENTION_S
NOTICE = ("All images are **synthetic**, produced by generative models. They are for research and education, "
          "**not for diagnosis** or any clinical decision.")


def export_dir() -> Path:
    path = Path(os.environ.get("MEDGAN_EXPORT_DIR") or Path(tempfile.gettempdir()) / "medgan-exports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _registry(registry: Registry | None) -> Registry:
    return registry or get_registry()


def models(registry: Registry | None = None) -> list[ModelInfo]:
    return _registry(registry).list_models()


def model_choices(registry: Registry | None = None) -> list[tuple[str, str]]:
    """(label, id) of every model that can be sampled from a seed."""
    return [(m.label(), m.id) for m in models(registry) if m.generatable]


def models_json(registry: Registry | None = None) -> list[dict[str, Any]]:
    keys = ("id", "title", "modality", "organ", "plane", "resolution", "source", "license", "metrics",
            "architecture", "dataset", "kind", "generatable", "revision", "notice")
    return [{k: m.to_dict()[k] for k in keys} for m in models(registry)]


def source_notices(registry: Registry | None = None) -> list[str]:
    """Why a source lists nothing or less than expected (e.g. no medigan catalogue offline), for the UI."""
    reg = _registry(registry)
    reg.list_models()  # sources refresh their `notice` while listing
    return [f"{s.name}: {s.notice}" for s in reg.sources if getattr(s, "notice", "")]


def check_request(model_id: object, seed: object, count: object) -> tuple[str, int, int]:
    return check_model_id(model_id), check_seed(seed), check_count(count, MAX_COUNT)


def caption(model_id: str, seed: int, index: int) -> str:
    return f"SYNTHETIC · {model_id} · seed {seed} · #{index}"


def generate(model_id: object, seed: object, count: object, registry: Registry | None = None
             ) -> list[tuple[Image.Image, str]]:
    """(image, caption) pairs; each PIL image carries synthetic-provenance text for its PNG encoding."""
    model_id, seed, count = check_request(model_id, seed, count)
    gen = _registry(registry).load(model_id)
    arrays = gen.generate(count=count, seed=seed, output_type="np")
    prov = Provenance(model_id=model_id, seed=seed, revision=getattr(gen, "revision", ""), version=__version__)
    out = []
    for index, array in enumerate(arrays):
        image = Image.fromarray(array)
        # Deterministic text only (no timestamp), so the same request gives byte-identical PNGs.
        image.info.update({k: v for k, v in prov.for_index(index).items() if k != "CreationTime"})
        out.append((image, caption(model_id, seed, index)))
    return out


def export(model_id: object, seed: object, count: object, fmt: object = "png", label: object = False,
           registry: Registry | None = None) -> Path:
    """A zip of the batch in `fmt` with metadata.json and README.txt, in the export folder."""
    model_id, seed, count = check_request(model_id, seed, count)
    fmt, label = check_format(fmt), check_flag("label", label)
    reg = _registry(registry)
    info, gen = reg.info(model_id), reg.load(model_id)
    arrays = gen.generate(count=count, seed=seed, output_type="np")
    prov = Provenance.now(model_id=model_id, seed=seed, revision=getattr(gen, "revision", ""),
                          modality=info.modality)
    cleanup_exports()
    name = f"{file_stem(model_id, seed, 0).rsplit('_', 1)[0]}_n{count}_{fmt}_{uuid.uuid4().hex[:8]}.zip"
    extra = {"model_info": {k: v for k, v in info.to_dict().items() if k not in ("card_summary", "description")},
             "labelled": label}
    return write_zip(export_dir() / name, arrays, prov, fmt, extra=extra, label=label, info=info,
                     config=getattr(gen, "config", None))  # config.json may state a pixel spacing


def cleanup_exports(retention_s: float | None = None) -> int:
    """Delete exports older than the retention time; returns how many were removed."""
    limit = time.time() - (EXPORT_RETENTION_S if retention_s is None else retention_s)
    removed = 0
    for path in export_dir().glob("synthetic_*"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def model_markdown(model_id: str, registry: Registry | None = None) -> str:
    """The info panel: config metadata and the card summary."""
    try:
        m = _registry(registry).info(model_id)
    except InvalidArgumentError:
        return ""
    rows = [("Model id", f"`{m.id}`"), ("Source", m.source), ("Modality", m.modality), ("Organ / region", m.organ),
            ("Plane", m.plane), ("Resolution", f"{m.resolution}×{m.resolution}" if m.resolution else ""),
            ("Architecture", m.architecture), ("Training data", m.dataset), ("Licence", m.license),
            ("Revision", m.revision[:12])]
    for key in ("fid", "kid", "precision", "recall"):
        if isinstance(m.metrics.get(key), (int, float)):
            rows.append((key.upper() if len(key) == 3 else key.title(), f"{m.metrics[key]:.3g}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v)
    parts = [f"### {m.title}", m.card_summary or m.description, "| Field | Value |\n|---|---|\n" + table]
    if m.notice:
        parts.append(f"*{m.notice}*")
    return "\n\n".join(p for p in parts if p)
