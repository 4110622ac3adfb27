"""The training split a run learns from: its images, labels and the provenance a model card needs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgan.errors import MedganError

from ..data import BUILTIN_DATASETS, load_dataset
from ..data.lazy import pixels_sha256
from .config import TrainConfig, UsageError


@dataclass
class TrainingData:
    images: Any                         # uint8 [n, 1, N, N]: an array, or a dataset folder's ShardImages
    info: dict[str, Any]                # provenance for config.json and the card
    labels: np.ndarray | None = None    # int64 [n] class per image when conditional
    classes: list[str] = field(default_factory=list)


def load_training_data(cfg: TrainConfig) -> TrainingData:
    """The training split's images, provenance and (with --condition) labels."""
    source = cfg.data or cfg.dataset
    if not source:
        raise UsageError("give --dataset NAME or --data FILE")
    if cfg.data and not Path(cfg.data).exists():
        raise UsageError(f"dataset file not found: {cfg.data}")
    try:
        dataset = load_dataset(source, cfg.size, axes=tuple(cfg.axes))
        train = dataset.train()
    except (MedganError, OSError, ValueError, KeyError, LookupError) as exc:
        raise UsageError(f"cannot load dataset {source!r}: {exc}") from None
    images = train.images  # a dataset folder's stay on disk (ShardImages), read batch by batch
    if images.ndim != 4 or images.shape[0] == 0:
        raise UsageError(f"dataset {source!r} has no training images (shape {images.shape})")
    if images.dtype != np.uint8 or images.shape[2:] != (cfg.size, cfg.size):
        raise UsageError(f"dataset {source!r} gave {images.dtype} images of shape {images.shape[1:]}, "
                         f"expected uint8 [1, {cfg.size}, {cfg.size}]")
    data = TrainingData(images, data_provenance(dataset.meta, train, images, BUILTIN_DATASETS))
    if cfg.condition:
        try:
            labels, classes = train.labels(cfg.condition)
        except MedganError as exc:
            raise UsageError(str(exc)) from None
        if (labels < 0).any():
            raise UsageError(f"--condition {cfg.condition}: {int((labels < 0).sum())} training images have no "
                             f"{cfg.condition} label (native 2-D images have no level)")
        data.labels, data.classes = labels, classes
        data.info["condition"] = {"kind": cfg.condition, "classes": classes,
                                  "counts": np.bincount(labels, minlength=len(classes)).tolist()}
    return data


def data_provenance(meta: dict[str, Any], train: Any, images: np.ndarray,
                    builtins: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The dataset facts a model card needs (name, licences, sources, split), without the bulky lists."""
    name = meta.get("dataset", "")
    spec = builtins.get(name, {})
    sources = [{k: s.get(k) for k in ("id", "subject", "slices", "licence") if k in s} for s in meta.get("sources", [])]
    licences = sorted({s["licence"] for s in sources if s.get("licence")})
    counts = meta.get("counts", {})
    info = {"name": name, "description": spec.get("description", ""), "modality": spec.get("modality", ""),
            "licences": licences, "licence_url": spec.get("licence_url", ""), "sources": sources,
            "split": meta.get("split"), "split_rule": meta.get("split_rule"), "warnings": meta.get("warnings", []),
            "size": meta.get("size"), "axes": meta.get("axes"), "subjects": counts.get("subjects"),
            "train_slices": int(images.shape[0]),
            "train_subjects": len(set(np.asarray(train.subject).tolist())),
            "heldout_slices": counts.get("heldout"), "skipped_files": len(meta.get("skipped", [])),
            "public": meta.get("public", name in builtins), "pseudonymised": meta.get("pseudonymised"),
            "sha256": pixels_sha256(images)}
    return {k: v for k, v in info.items() if v not in (None, "", [])}
