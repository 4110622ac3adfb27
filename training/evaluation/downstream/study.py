"""Downstream usefulness of a generator: does training a classifier on its images help on real scans?

    python -m training.downstream weights/<id> --task level [--data DATASET.npz | --dataset NAME] --out DIR
           [--quick] [--seeds 3] [--classifier cnn|resnet18|both] [--init PATH] [--threads 1]

The task is labelled from REAL data with a subject-level split: classify the slice's anatomical `level` (the
5 position bands the conditional generator is trained with; training.data), where the data has several
slicing planes its `plane`, and where it mixes MR contrasts (brain-mr) its `contrast`. Classifiers train on the dataset's `train` split (the generator's training
subjects) and are tested ONLY on its `heldout` split. Before anything is trained, the test subjects are compared
with the subjects the generator was trained on (training_data in config.json: a recorded list; else the
training-split sha256 matched against this dataset's train split; else every subject of the recorded sources,
conservatively); any overlap stops the run with exit status 2, naming the subjects. A single-subject "slab"
dataset (head-ct) always overlaps: `--allow-slab-split` runs it anyway and says in every output that the test
set is NOT subject-independent.

Regimes (REGIMES), each over >= 3 seeds (classifier init, data order, low-data subset and synthetic seed all
change with the seed; regimes share them within a seed, so differences are paired), as mean and 95 %
t-interval over seeds: real only (TRTR), synthetic only (TSTR, as many images as real), real + synthetic 1:1
and 1:4, 10 % and 25 % of the real slices with and without synthetic (as many synthetic images as the FULL real
set), synthetic pre-training then fine-tuning on real, and, with `--init PATH` (a local safetensors checkpoint:
ImageNet weights cannot be downloaded here), that checkpoint fine-tuned on real. Every regime trains for the
same number of optimiser steps (pre-training: twice, once per phase); the final weights are tested (no model
selection on the test set). Synthetic labels: a conditional generator's own class (`label=`, drawn in the real
training split's class proportions); an unconditional model's images are labelled by the TRTR classifier (same
architecture and seed), and the report says so.

Classifiers: a small CNN (~60 k parameters) and torchvision's ResNet-18 with one input channel, both from
scratch. Metrics: accuracy, balanced accuracy (headline), macro-F1 (both over the classes present in the test
set), per-class recall (null for classes absent from the test set) and the confusion matrix.

Outputs: DIR/downstream.json (SCHEMA below; also written into the model folder with a summary in config.json
`metrics["downstream"]` and the card re-rendered, unless --no-write) and DIR/downstream.png (balanced accuracy
per regime with 95 % CIs). Runtime: --quick (CNN, tiny steps) is a smoke test (<= 2 min: 38 CPU-s on brain-t1);
the full study (CNN 200 steps + ResNet-18 100 steps per regime, batch 32, 3 seeds) targets <= 30 CPU-minutes
for one model on one thread: ~26 min estimated for brain-t1 at 64² from measured per-step costs (ResNet-18 is
~80 %). The CPU time used is recorded in downstream.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medgan.errors import MedganError

from .downstream_card import CLASSIFIER_NAMES, HEADLINE, card_section, fmt_number, fmt_stat  # noqa: F401

SCHEMA_VERSION = 1
TASKS = ("level", "plane", "contrast")
CLASSIFIERS = ("cnn", "resnet18")
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
DEFAULT_STEPS = {"cnn": 200, "resnet18": 100}
QUICK_STEPS = 15
FINETUNE_LR_FACTOR = 0.3
SYNTHETIC_SEED_OFFSET = 10_000
POOL_RATIO = 4  # synthetic images generated per real training slice and seed (the 1:4 regime uses them all)
GEN_CHUNK = 512
IMAGENET_NOTE = ("ImageNet-pretrained weights cannot be downloaded here; pre-training uses this model's synthetic "
                 "images, and --init PATH loads a local safetensors checkpoint instead.")

# id, title, real fraction, synthetic count in units of the FULL real training count, pre-train, medigan field
REGIMES: list[dict[str, Any]] = [
    {"id": "trtr", "title": "real only (TRTR)", "real_fraction": 1.0, "synthetic_ratio": 0.0,
     "phases": "train", "medigan": "trained_on_real"},
    {"id": "tstr", "title": "synthetic only (TSTR)", "real_fraction": 0.0, "synthetic_ratio": 1.0,
     "phases": "train", "medigan": "trained_on_fake"},
    {"id": "mix_1_1", "title": "real + synthetic 1:1", "real_fraction": 1.0, "synthetic_ratio": 1.0,
     "phases": "train", "medigan": "trained_on_real_and_fake"},
    {"id": "mix_1_4", "title": "real + synthetic 1:4", "real_fraction": 1.0, "synthetic_ratio": 4.0,
     "phases": "train", "medigan": None},
    {"id": "low10_real", "title": "10 % real", "real_fraction": 0.1, "synthetic_ratio": 0.0,
     "phases": "train", "medigan": None},
    {"id": "low10_mix", "title": "10 % real + synthetic (full real count)", "real_fraction": 0.1,
     "synthetic_ratio": 1.0, "phases": "train", "medigan": None},
    {"id": "low25_real", "title": "25 % real", "real_fraction": 0.25, "synthetic_ratio": 0.0,
     "phases": "train", "medigan": None},
    {"id": "low25_mix", "title": "25 % real + synthetic (full real count)", "real_fraction": 0.25,
     "synthetic_ratio": 1.0, "phases": "train", "medigan": None},
    {"id": "pretrain_finetune", "title": "pre-train on synthetic (1:4), fine-tune on real", "real_fraction": 1.0,
     "synthetic_ratio": 4.0, "phases": "pretrain-finetune", "medigan": None},
]
INIT_REGIME = {"id": "init_finetune", "title": "--init checkpoint, fine-tuned on real", "real_fraction": 1.0,
               "synthetic_ratio": 0.0, "phases": "init-finetune", "medigan": None}
# (id, minuend regime, subtrahend regime): paired differences over seeds
DELTAS = [("tstr_vs_trtr", "tstr", "trtr"), ("mix_1_1_vs_trtr", "mix_1_1", "trtr"),
          ("mix_1_4_vs_trtr", "mix_1_4", "trtr"), ("low10_gain", "low10_mix", "low10_real"),
          ("low25_gain", "low25_mix", "low25_real"), ("pretrain_vs_trtr", "pretrain_finetune", "trtr"),
          ("init_vs_trtr", "init_finetune", "trtr")]


class DownstreamError(MedganError, ValueError):
    """A study that cannot run as asked (data, task, model, checkpoint); the CLI exits with status 2."""


class LeakageError(DownstreamError):
    """The test split holds a subject the generator (or the classifier) was trained on."""


# ----------------------------------------------------------------------------- schema
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_INTS = {"type": "array", "items": _INT}
_STAT = {"type": "object", "description": "mean, sample std, 95 % t-interval of the mean over seeds (clipped to "
                                           "the metric's range), and the per-seed values",
         "required": ["mean", "std", "n", "ci95", "values"],
         "properties": {"mean": _NUM, "std": _NUM, "n": {"type": "integer", "minimum": 1},
                        "ci95": {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2},
                        "values": {"type": "array", "items": _NUM, "minItems": 1}}}
_MATRIX = {"type": "array", "items": _INTS, "description": "confusion[true][predicted], task class order"}
_RUN = {"type": "object", "description": "one seed of one regime",
        "required": ["seed", "synthetic_seed", "n_real", "n_synthetic", "steps", *METRICS, "per_class_recall",
                     "confusion", "cpu_s"],
        "properties": {"seed": {"type": "integer"}, "synthetic_seed": {"type": ["integer", "null"]},
                       "n_real": _INT, "n_synthetic": _INT, "steps": _INT,
                       **{m: {"type": "number", "minimum": 0, "maximum": 1} for m in METRICS},
                       "per_class_recall": {"type": "array", "items": _NUM_OR_NULL,
                                            "description": "null: class absent from the test set"},
                       "confusion": _MATRIX, "cpu_s": _NUM}}
_REGIME_RESULT = {"type": "object", "required": ["runs", "summary", "confusion_total"],
                  "properties": {"runs": {"type": "array", "items": _RUN, "minItems": 1},
                                 "summary": {"type": "object", "required": [*METRICS, "per_class_recall"],
                                             "properties": {**{m: _STAT for m in METRICS},
                                                            "per_class_recall": {"type": "array", "items": {
                                                                "anyOf": [_STAT, {"type": "null"}]}}}},
                                 "confusion_total": _MATRIX}}
_DELTA = {"type": "object", "required": ["minuend", "subtrahend", "metric", "stats", "verdict"],
          "properties": {"minuend": _STR, "subtrahend": _STR, "metric": {"const": HEADLINE},
                         "stats": {"type": "object", "required": list(METRICS),
                                   "properties": {m: _STAT for m in METRICS}},
                         "verdict": {"enum": ["gain", "loss", "no measurable effect"]}}}
_MEDIGAN_SCORES = {"type": "object", "required": ["accuracy", "balanced_accuracy", "f1"],
                   "properties": {"accuracy": _NUM, "balanced_accuracy": _NUM, "f1": _NUM}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "downstream.json (MedGAN Studio, training/downstream.py)",
    "type": "object",
    "required": ["schema_version", "kind", "model", "task", "data", "leakage_check", "synthetic", "settings",
                 "regimes", "results", "deltas", "medigan", "notes", "timing", "command", "versions"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "kind": {"const": "medgan-downstream"},
        "created_utc": _STR,
        "model": {"type": "object", "required": ["id", "arch", "conditional", "classes", "condition", "resolution"],
                  "properties": {"id": _STR, "arch": _STR, "conditional": {"type": "boolean"}, "classes": _STRS,
                                 "condition": _STR, "resolution": _INT, "folder": {"type": ["string", "null"]}}},
        "task": {"type": "object", "required": ["name", "classes", "description"],
                 "properties": {"name": {"enum": list(TASKS)}, "classes": {**_STRS, "minItems": 2},
                                "description": _STR}},
        "data": {"type": "object", "description": "real slices: classifier training (train) and test (heldout)",
                 "required": ["dataset", "source", "size", "split", "train", "test"],
                 "properties": {"dataset": _STR, "source": _STR, "size": _INT, "split": {"type": ["string", "null"]},
                                **{part: {"type": "object",
                                          "required": ["slices", "subjects", "class_counts"],
                                          "properties": {"slices": _INT, "subjects": _STRS, "class_counts": _INTS,
                                                         "classes_present": _STRS, "classes_missing": _STRS}}
                                   for part in ("train", "test")}}},
        "leakage_check": {"type": "object",
                          "required": ["status", "generator_subjects", "basis", "test_subjects", "overlap",
                                       "message"],
                          "properties": {"status": {"enum": ["passed", "slab-split"]},
                                         "generator_subjects": _STRS, "basis": _STR, "test_subjects": _STRS,
                                         "overlap": _STRS, "message": _STR, "generator_split_verified":
                                             {"type": "boolean"}}},
        "synthetic": {"type": "object",
                      "required": ["labels_from", "note", "pool_per_seed", "truncation", "seeds"],
                      "properties": {"labels_from": {"enum": ["generator", "classifier"]}, "note": _STR,
                                     "pool_per_seed": _INT, "truncation": _NUM,
                                     "seeds": {"type": "array", "items": {
                                         "type": "object", "required": ["seed", "synthetic_seed", "sha256",
                                                                        "label_counts"],
                                         "properties": {"seed": {"type": "integer"},
                                                        "synthetic_seed": {"type": "integer"}, "sha256": _STR,
                                                        "label_counts": {"type": "object",
                                                                         "additionalProperties": _INTS}}}}}},
        "settings": {"type": "object",
                     "required": ["seeds", "classifiers", "steps", "batch_size", "lr", "finetune_lr", "optimizer",
                                  "quick", "threads", "device", "init", "pretrained_note"],
                     "properties": {"seeds": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
                                    "classifiers": {"type": "array", "items": {"enum": list(CLASSIFIERS)},
                                                    "minItems": 1},
                                    "steps": {"type": "object", "additionalProperties": _INT},
                                    "batch_size": _INT, "lr": _NUM, "finetune_lr": _NUM, "optimizer": _STR,
                                    "quick": {"type": "boolean"}, "balanced_batches": {"type": "boolean"}, "threads": _INT, "device": _STR,
                                    "init": {"type": ["object", "null"]}, "pretrained_note": _STR}},
        "regimes": {"type": "array", "minItems": len(REGIMES), "items": {
            "type": "object", "required": ["id", "title", "real_fraction", "synthetic_ratio", "phases", "medigan"],
            "properties": {"id": _STR, "title": _STR, "real_fraction": _NUM, "synthetic_ratio": _NUM,
                           "phases": _STR, "medigan": {"type": ["string", "null"]}}}},
        "results": {"type": "object", "description": "classifier -> regime id -> runs and summary",
                    "additionalProperties": {"type": "object", "additionalProperties": _REGIME_RESULT}},
        "deltas": {"type": "object", "description": "classifier -> paired differences over seeds",
                   "additionalProperties": {"type": "object", "additionalProperties": _DELTA}},
        "medigan": {"type": "object", "description": "medigan's CLF field names, per classifier (means)",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["trained_on_real", "trained_on_fake", "trained_on_real_and_fake", "CLF_delta"],
                        "properties": {"trained_on_real": _MEDIGAN_SCORES, "trained_on_fake": _MEDIGAN_SCORES,
                                       "trained_on_real_and_fake": _MEDIGAN_SCORES, "CLF_delta": _NUM}}},
        "notes": _STRS,
        "timing": {"type": "object", "required": ["cpu_time_s", "wall_time_s", "threads"],
                   "properties": {"cpu_time_s": _NUM, "wall_time_s": _NUM, "threads": _INT,
                                  "cpu_s_by_part": {"type": "object", "additionalProperties": _NUM}}},
        "command": _STR,
        "versions": {"type": "object", "additionalProperties": _STR},
        "figure": {"type": ["string", "null"]},
    },
}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return isinstance(value, int) or (name == "number" and math.isfinite(value))
    return isinstance(value, _TYPES[name])


def validate(instance: Any, schema: dict[str, Any] | None = None, path: str = "$") -> list[str]:
    """Problems of `instance` against a JSON-schema subset (type, const, enum, anyOf, minimum/maximum,
    minItems/maxItems, items, required, properties, additionalProperties); [] when it conforms."""
    schema = SCHEMA if schema is None else schema
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_type_ok(instance, t) for t in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if "anyOf" in schema and not any(not validate(instance, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of the allowed forms")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{path}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{path}: {instance} > maximum {schema['maximum']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: {len(instance)} items, fewer than {schema['minItems']}")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: {len(instance)} items, more than {schema['maxItems']}")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(instance, dict):
        errors += [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in instance]
        props = schema.get("properties", {})
        for key, value in instance.items():
            if key in props:
                errors += validate(value, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(value, schema["additionalProperties"], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected key {key!r}")
    return errors


# ----------------------------------------------------------------------------- statistics
def t_quantile(p: float, df: int) -> float:
    try:
        from scipy.stats import t
        return float(t.ppf(p, df))
    except ImportError:  # two-sided 95 % only
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
        return table.get(df, 2.228 if df <= 10 else 2.0)


def summarize(values: Sequence[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, Any]:
    """Mean, sample std and the 95 % t-interval of the mean over seeds (clipped to `bounds`, the metric's range:
    with 3 seeds the interval is wide and would otherwise run past 0 or 1)."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    half = t_quantile(0.975, len(v) - 1) * std / math.sqrt(len(v)) if len(v) > 1 else 0.0
    lo, hi = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return {"mean": round(mean, 6), "std": round(std, 6), "n": int(len(v)),
            "ci95": [round(lo, 6), round(hi, 6)], "values": [round(float(x), 6) for x in v]}


def verdict(stat: dict[str, Any]) -> str:
    lo, hi = stat["ci95"]
    return "gain" if lo > 0 else "loss" if hi < 0 else "no measurable effect"


def scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy; balanced accuracy and macro-F1 over the classes present in y_true; per-class recall (None for
    absent classes); confusion[true][pred]."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    support, predicted, hits = cm.sum(1), cm.sum(0), np.diag(cm)
    present = np.flatnonzero(support)
    recall = [float(hits[i] / support[i]) if support[i] else None for i in range(num_classes)]
    f1 = []
    for i in present:
        p = hits[i] / predicted[i] if predicted[i] else 0.0
        r = hits[i] / support[i]
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"accuracy": float(hits.sum() / max(cm.sum(), 1)),
            "balanced_accuracy": float(np.mean([recall[i] for i in present])),
            "macro_f1": float(np.mean(f1)), "per_class_recall": recall, "confusion": cm.tolist()}


# ----------------------------------------------------------------------------- classifiers
def make_classifier(kind: str, num_classes: int):
    """A fresh classifier for [n, 1, N, N] inputs in [-1, 1]: "cnn" (small, fast on CPU) or "resnet18"
    (torchvision's, 1 input channel, random init)."""
    from torch import nn

    if kind == "cnn":
        def block(cin: int, cout: int, stride: int = 1, pool: bool = False) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])
        return nn.Sequential(*block(1, 16, stride=2), *block(16, 32, pool=True), *block(32, 64, pool=True),
                             *block(64, 64), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2),
                             nn.Linear(256, num_classes))
    if kind == "resnet18":
        from torchvision.models import resnet18
        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        return net
    raise DownstreamError(f"unknown classifier {kind!r}; choose from {', '.join(CLASSIFIERS)}")


PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def read_init(path: str | Path) -> dict[str, Any]:
    """A local safetensors checkpoint (pickles are refused unopened); keys with a `module.` prefix are fine."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise DownstreamError(f"--init {path.name}: pickle checkpoints are refused (they run code when opened); "
                              "convert it to .safetensors")
    if not path.is_file():
        raise DownstreamError(f"--init {path}: no such file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DownstreamError(f"--init {path.name}: not a readable safetensors file ({exc})") from None
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def apply_init(net, tensors: dict[str, Any]) -> dict[str, Any]:
    """Copy every tensor whose name and shape fit (a 3-channel first conv is summed to 1 channel, the usual
    ImageNet adaptation); report what was loaded. Raises when under half of the network's tensors fit."""
    import torch

    state = net.state_dict()
    loaded, adapted = [], []
    with torch.no_grad():
        for key, want in state.items():
            got = tensors.get(key)
            if got is None or key.endswith("num_batches_tracked"):
                continue
            if tuple(got.shape) == tuple(want.shape):
                state[key] = got.to(want.dtype)
                loaded.append(key)
            elif got.ndim == 4 and want.ndim == 4 and got.shape[1] == 3 and want.shape[1] == 1 \
                    and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]:
                state[key] = got.sum(1, keepdim=True).to(want.dtype)
                loaded.append(key)
                adapted.append(key)
    total = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    if len(loaded) < total / 2:
        raise DownstreamError(f"the --init checkpoint fits {len(loaded)} of {total} tensors of this classifier")
    net.load_state_dict(state)
    return {"loaded_tensors": len(loaded), "total_tensors": total, "adapted_to_1_channel": adapted,
            "skipped": sorted(k for k in state if k not in loaded and not k.endswith("num_batches_tracked"))[:20]}


def to_input(x):
    return x.float().div_(127.5).sub_(1.0)


def fit(net, x, y, *, steps: int, lr: float, batch: int, seed: int, device, desc: str = "", progress=None,
        balanced: bool = False):
    """`steps` AdamW steps (weight decay 1e-4, cosine decay to 0) on batches drawn with replacement from uint8
    images x [n, 1, N, N] and labels y, in an order fixed by `seed`: uniformly, or with every class equally
    likely (`balanced`: each image weighted 1 / its class's count; for skewed tasks such as brain-mr's contrast,
    where a uniform draw teaches the majority class)."""
    import torch
    import torch.nn.functional as F

    if len(x) == 0:
        raise DownstreamError(f"{desc}: no training images")
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    draw = batch_sampler(y, batch, gen, balanced)
    net.train()
    for _ in range(steps):
        idx = draw()
        loss = F.cross_entropy(net(to_input(x[idx]).to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress.update(1)
    net.eval()
    return net


def batch_sampler(y, batch: int, gen, balanced: bool):
    """A function drawing `batch` indices of labels y with replacement: uniformly, or each class equally likely."""
    import torch

    if not balanced:
        return lambda: torch.randint(len(y), (batch,), generator=gen)
    weights = 1.0 / torch.bincount(y)[y].double()
    return lambda: torch.multinomial(weights, batch, replacement=True, generator=gen)


def predict(net, x, device, batch: int = 256) -> np.ndarray:
    """Class probabilities [n, K] of uint8 images x [n, 1, N, N]."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.softmax(net(to_input(x[i:i + batch]).to(device)), 1).cpu())
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- data, model, leakage
@dataclass
class Task:
    name: str
    classes: list[str]
    x_train: np.ndarray          # uint8 [n, 1, N, N]
    y_train: np.ndarray          # int64 [n]
    subject_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    subject_test: np.ndarray
    dataset: str
    source: str
    split: str | None
    notes: list[str] = field(default_factory=list)
    split_modes: list[str] = field(default_factory=list)  # a stratified split's per-contrast modes (brain-mr)


def resolve_model(spec: str) -> tuple[Any, Path | None]:
    """A model folder, or the id of a model in a local folder (weights/ or MEDGAN_WEIGHTS_DIRS)."""
    import medgan

    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        return path, path
    registry = medgan.get_registry()
    try:
        info = registry.info(spec)
    except MedganError as exc:
        raise DownstreamError(f"{spec!r} is neither a model folder nor a known model id ({exc})") from None
    if info.source != "local":
        raise DownstreamError(f"{spec!r} comes from the {info.source} source; pass a local model folder")
    folder = next(s for s in registry.sources if s.name == "local").folder(spec)
    return folder, folder


def task_axes(task: str, training_data: dict[str, Any]) -> tuple[int, ...]:
    if task == "plane":
        return (0, 1, 2)
    axes = training_data.get("axes")
    return tuple(int(a) for a in axes) if isinstance(axes, list) and axes else (2,)


def load_task(task: str, source: str, size: int, axes: tuple[int, ...]):
    """(Task, the full SliceDataset) from a built-in name or an .npz, at the generator's size."""
    from .data import BUILTIN_DATASETS, DatasetError, load_dataset

    if task not in TASKS:
        raise DownstreamError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    try:
        ds = load_dataset(source, size, axes=axes)
    except DatasetError as exc:
        raise DownstreamError(str(exc)) from None
    labels, classes = ds.labels(task)
    if task == "plane" and len(classes) < 2:
        raise DownstreamError(f"--task plane needs slices along several planes; {source} has only "
                              f"{', '.join(classes) or 'none'} (build it with --axes 0,1,2, or use --task level)")
    keep = labels >= 0
    if not keep.any():
        raise DownstreamError(f"{source} has no {task} labels (native 2-D images have no level)")
    train = keep & (ds.split == "train")
    test = keep & (ds.split == "heldout")
    if not train.any() or not test.any():
        raise DownstreamError(f"{source}: the task needs labelled slices in both splits (train {int(train.sum())}, "
                              f"held-out {int(test.sum())})")
    name = str(ds.meta.get("dataset") or ds.meta.get("name") or Path(source).stem)
    if source in BUILTIN_DATASETS:
        name = source
    t = Task(task, list(classes), ds.images[train], labels[train], ds.subject[train].astype(str),
             ds.images[test], labels[test], ds.subject[test].astype(str), name, str(source), ds.meta.get("split"),
             split_modes=sorted(set(ds.meta.get("split_by_contrast", {}).values())))
    return t, ds


def generator_subjects(training_data: dict[str, Any], ds, gen_axes: tuple[int, ...]) -> tuple[set[str], str, bool]:
    """(subjects the generator may have trained on, how that is known, whether its split is verified)."""
    for key in ("train_subject_names", "train_subject_ids", "train_subjects", "subjects_train"):
        value = training_data.get(key)
        if isinstance(value, list) and value:
            return {str(v) for v in value}, f"recorded list training_data[{key!r}]", True
    recorded = training_data.get("sha256")
    if isinstance(recorded, str) and recorded:
        # as load_dataset selects slices for training: the generator's axes plus native 2-D images (axis -1)
        mask = (ds.split == "train") & ((ds.axis < 0) | np.isin(ds.axis, gen_axes))
        digest = hashlib.sha256(np.ascontiguousarray(ds.images[mask]).tobytes()).hexdigest()
        if digest == recorded:
            return ({str(s) for s in ds.subject[mask]},
                    "training-split sha256 in config.json matches this dataset's train split", True)
    sources = training_data.get("sources")
    if isinstance(sources, list):
        subjects = {str(s["subject"]) for s in sources if isinstance(s, dict) and s.get("subject")}
        if subjects:
            return (subjects, "every subject of the model's recorded sources (which of them it held out is not "
                    "recorded, so all are treated as possibly trained on)", False)
    raise LeakageError("cannot check for leakage: the model's config.json records neither its training subjects "
                       "(training_data.sources / train_subject_names) nor a training-split sha256")


def leakage_check(training_data: dict[str, Any], ds, task: Task, gen_axes: tuple[int, ...],
                  allow_slab: bool) -> dict[str, Any]:
    """Stop (LeakageError) when a test subject is one the generator or the classifier trained on."""
    gen_subjects, basis, verified = generator_subjects(training_data, ds, gen_axes)
    test_subjects = sorted(set(task.subject_test.tolist()))
    overlap = sorted((gen_subjects | set(task.subject_train.tolist())) & set(test_subjects))
    check = {"generator_subjects": sorted(gen_subjects), "basis": basis, "test_subjects": test_subjects,
             "overlap": overlap, "generator_split_verified": verified}
    if not overlap:
        return {**check, "status": "passed",
                "message": f"no test subject ({', '.join(test_subjects)}) is among the generator's training "
                           f"subjects ({', '.join(sorted(gen_subjects))}) or the classifier's"}
    slab = "slab" in (task.split, training_data.get("split")) or "slab" in task.split_modes
    if allow_slab and slab:
        return {**check, "status": "slab-split",
                "message": f"NOT subject-independent: {', '.join(overlap)} is in training and test as two disjoint "
                           "slabs of one volume (single-subject slab split, --allow-slab-split); "
                           + ("the generator's split is verified to be this one" if verified else
                              "whether the generator held out this same slab is not verified")}
    hint = (" The dataset is a single-subject slab split: --allow-slab-split runs it anyway, reported as not "
            "subject-independent." if slab else "")
    raise LeakageError(f"leakage: test subject(s) {', '.join(overlap)} were trained on (generator subjects by "
                       f"{basis}: {', '.join(sorted(gen_subjects))}).{hint}")


def synth_labels_source(gen, task: Task) -> str:
    """'generator' when the model is conditional on this task's labels with the same class names."""
    cond = gen.config.generator.condition
    if gen.classes and cond == task.name:
        if list(gen.classes) != list(task.classes):
            raise DownstreamError(f"the generator's {cond} classes {gen.classes} are not the task's classes "
                                  f"{task.classes}")
        return "generator"
    return "classifier"


def generate_pool(gen, labels: np.ndarray | None, count: int, seed: int, truncation: float) -> np.ndarray:
    """uint8 [count, 1, N, N]: with `labels`, image j has class labels[j] (class blocks take consecutive
    indices of `seed`); without, images 0..count-1 of `seed` with the model's own draw."""
    out = np.empty((count, gen.config.generator.resolution, gen.config.generator.resolution), np.uint8)
    groups = [(None, np.arange(count))] if labels is None else \
        [(int(k), np.flatnonzero(labels == k)) for k in np.unique(labels)]
    start = 0
    for label, idx in groups:
        parts = [gen.generate(min(GEN_CHUNK, len(idx) - i), seed, start=start + i, truncation=truncation,
                              label=label, output_type="np") for i in range(0, len(idx), GEN_CHUNK)]
        out[idx] = np.concatenate(parts)
        start += len(idx)
    return out[:, None]


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of about `fraction` of each class (at least one per class present), chosen by `seed`."""
    rng = np.random.default_rng([seed, 7])
    picks = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        picks.append(rng.choice(idx, max(1, int(round(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(picks))


# ----------------------------------------------------------------------------- study
@dataclass
class Settings:
    seeds: list[int]
    classifiers: list[str]
    steps: dict[str, int]
    batch_size: int = 32
    lr: float = 1e-3
    threads: int = 1
    device: str = "cpu"
    truncation: float = 1.0
    quick: bool = False
    init: str | None = None
    progress: bool = True
    balanced: bool = False     # class-balanced batches (see fit)


def regimes_for(settings: Settings) -> list[dict[str, Any]]:
    return [*REGIMES, *([INIT_REGIME] if settings.init else [])]


@dataclass
class _Study:
    """What every run of one study shares."""
    gen: Any
    task: Task
    settings: Settings
    device: Any
    labels_from: str                     # "generator" | "classifier"
    regimes: list[dict[str, Any]]
    init_tensors: dict[str, Any] | None = None
    init_info: dict[str, Any] | None = None
    init_fits: dict[str, bool] = field(default_factory=dict)
    bar: Any = None

    @property
    def k(self) -> int:
        return len(self.task.classes)


def _check_init(study: _Study) -> None:
    """Read --init and find which classifiers it fits (a ResNet-18 checkpoint fits no CNN); none: an error."""
    settings = study.settings
    if not settings.init:
        return
    study.init_tensors = read_init(settings.init)
    study.init_info = {"path": str(settings.init), "applied_to": {},
                       "sha256": hashlib.sha256(Path(settings.init).read_bytes()).hexdigest()}
    for clf in settings.classifiers:
        try:
            study.init_info["applied_to"][clf] = apply_init(make_classifier(clf, study.k), study.init_tensors)
            study.init_fits[clf] = True
        except DownstreamError as exc:
            study.init_info["applied_to"][clf] = {"error": str(exc)}
            study.init_fits[clf] = False
    if not any(study.init_fits.values()):
        raise DownstreamError(f"--init {Path(settings.init).name} fits none of the classifiers "
                              f"({'; '.join(v['error'] for v in study.init_info['applied_to'].values())})")


def _regimes_of(study: _Study, clf: str) -> list[dict[str, Any]]:
    return [r for r in study.regimes if r["phases"] != "init-finetune" or study.init_fits.get(clf)]


def _synthetic_pool(study: _Study, seed: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """This seed's synthetic images (POOL_RATIO x the real training count) and, for a conditional model, their
    labels: POOL_RATIO shuffled copies of the real training labels, so every block of n_real has the real
    class proportions."""
    synth_seed = SYNTHETIC_SEED_OFFSET + seed
    pool_n = POOL_RATIO * len(study.task.y_train)
    pool_y = None
    if study.labels_from == "generator":
        rng = np.random.default_rng([seed, 2])
        pool_y = np.concatenate([rng.permutation(study.task.y_train) for _ in range(POOL_RATIO)])
    pool_x = generate_pool(study.gen, pool_y, pool_n, synth_seed, study.settings.truncation)
    record = {"seed": seed, "synthetic_seed": synth_seed, "sha256": hashlib.sha256(pool_x.tobytes()).hexdigest(),
              "label_counts": {}}
    return pool_x, pool_y, record


def _train_regime(study: _Study, regime: dict[str, Any], net, data: dict[str, Any], steps: int,
                  order_seed: int) -> tuple[int, int]:
    """Train `net` as the regime says; returns (real images, synthetic images) it was trained on."""
    import torch

    s, n_real = study.settings, len(data["yr"])
    common = {"batch": s.batch_size, "device": study.device, "desc": regime["id"], "progress": study.bar,
              "balanced": s.balanced}
    ft_lr = s.lr * FINETUNE_LR_FACTOR
    n_syn = int(round(regime["synthetic_ratio"] * n_real))
    if regime["phases"] == "pretrain-finetune":
        fit(net, data["xs"][:n_syn], torch.from_numpy(data["ys"][:n_syn]), steps=steps, lr=s.lr, seed=order_seed,
            **common)
        fit(net, data["xr"], data["yr"], steps=steps, lr=ft_lr, seed=order_seed + 1, **common)
        return n_real, n_syn
    if regime["phases"] == "init-finetune":
        apply_init(net, study.init_tensors)
        fit(net, data["xr"], data["yr"], steps=steps, lr=ft_lr, seed=order_seed, **common)
        return n_real, 0
    frac = regime["real_fraction"]
    real_idx = np.arange(n_real) if frac >= 1.0 else data["subsets"][frac] if frac > 0 else np.arange(0)
    x_parts, y_parts = [data["xr"][real_idx]], [data["yr"][real_idx]]
    if n_syn:
        x_parts.append(data["xs"][:n_syn])
        y_parts.append(torch.from_numpy(data["ys"][:n_syn]))
    fit(net, torch.cat(x_parts), torch.cat(y_parts), steps=steps, lr=s.lr, seed=order_seed, **common)
    return len(real_idx), n_syn


def _classifier_runs(study: _Study, clf: str, index: int, seed: int, data: dict[str, Any],
                     record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every regime of one classifier and seed (same init and data order in each: differences are paired).
    For a model not conditional on the task, the TRTR classifier labels the synthetic pool first."""
    import torch

    steps, task = study.settings.steps[clf], study.task
    runs = {}
    data = {**data, "ys": data["pool_y"]}
    for regime in _regimes_of(study, clf):
        t_run = time.process_time()
        torch.manual_seed(seed * 1000 + index)
        net = make_classifier(clf, study.k).to(study.device)
        n_real, n_syn = _train_regime(study, regime, net, data, steps, order_seed=seed * 1000 + 17)
        pred = predict(net, torch.from_numpy(task.x_test), study.device).argmax(1)
        runs[regime["id"]] = {"seed": seed, "synthetic_seed": record["synthetic_seed"] if n_syn else None,
                              "n_real": n_real, "n_synthetic": n_syn,
                              "steps": steps * (2 if regime["phases"] == "pretrain-finetune" else 1),
                              **scores(task.y_test, pred, study.k), "cpu_s": round(time.process_time() - t_run, 2)}
        if regime["id"] == "trtr" and study.labels_from == "classifier":
            probs = predict(net, data["xs"], study.device)
            data["ys"] = probs.argmax(1).astype(np.int64)
            record.setdefault("label_confidence", {})[clf] = round(float(probs.max(1).mean()), 4)
    record["label_counts"][clf] = np.bincount(data["ys"], minlength=study.k).tolist()
    return runs


def _summaries(results: dict[str, dict[str, Any]], k: int) -> None:
    for per_clf in results.values():
        for res in per_clf.values():
            runs = res["runs"]
            res["summary"] = {
                **{m: summarize([r[m] for r in runs], (0.0, 1.0)) for m in METRICS},
                "per_class_recall": [None if runs[0]["per_class_recall"][i] is None else
                                     summarize([r["per_class_recall"][i] for r in runs], (0.0, 1.0))
                                     for i in range(k)]}
            res["confusion_total"] = np.sum([r["confusion"] for r in runs], axis=0).tolist()


def _deltas(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Paired differences over seeds (DELTAS), each with a verdict on the headline metric."""
    deltas: dict[str, dict[str, Any]] = {}
    for clf, per_clf in results.items():
        deltas[clf] = {}
        for name, a, b in DELTAS:
            if a in per_clf and b in per_clf:
                ra = {r["seed"]: r for r in per_clf[a]["runs"]}
                rb = {r["seed"]: r for r in per_clf[b]["runs"]}
                common = sorted(set(ra) & set(rb))
                stats = {m: summarize([ra[s][m] - rb[s][m] for s in common], (-1.0, 1.0)) for m in METRICS}
                deltas[clf][name] = {"minuend": a, "subtrahend": b, "metric": HEADLINE, "stats": stats,
                                     "verdict": verdict(stats[HEADLINE])}
    return deltas


def _medigan(results: dict[str, dict[str, Any]], deltas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """medigan's CLF field names (trained_on_real / _fake / _real_and_fake, CLF_delta) with our means."""
    def block(s: dict[str, Any]) -> dict[str, float]:
        return {"accuracy": s["accuracy"]["mean"], "balanced_accuracy": s[HEADLINE]["mean"],
                "f1": s["macro_f1"]["mean"]}
    return {clf: {"trained_on_real": block(res["trtr"]["summary"]), "trained_on_fake": block(res["tstr"]["summary"]),
                  "trained_on_real_and_fake": block(res["mix_1_1"]["summary"]),
                  "CLF_delta": deltas[clf]["mix_1_1_vs_trtr"]["stats"][HEADLINE]["mean"]}
            for clf, res in results.items()}


def _synthetic_note(labels_from: str) -> str:
    if labels_from == "generator":
        return ("labels from the conditional generator (`label=`), drawn in the real training split's class "
                "proportions")
    return ("this model is not conditional on the task's labels: its images were labelled by the TRTR classifier "
            "(real data only, same architecture and seed), so TSTR measures agreement with that classifier rather "
            "than the generator's own class fidelity")


def _notes(study: _Study, leakage: dict[str, Any], present: list[str], missing: list[str]) -> list[str]:
    notes = list(study.task.notes)
    if missing:
        notes.append(f"The held-out test set covers {len(present)} of {study.k} classes ({', '.join(present)}); "
                     "balanced accuracy and macro-F1 are over the classes present and per-class recall is null for "
                     f"{', '.join(missing)}: the test cannot tell how well those are recognised."
                     + (f" With one class, a classifier that always answers {present[0]} scores 1.0, so these "
                        "numbers cannot rank the regimes." if len(present) == 1 else ""))
    if leakage["status"] != "passed":
        notes.append(f"The test set is {leakage['message']}.")
    if study.labels_from == "classifier":
        notes.append("Synthetic labels: " + _synthetic_note(study.labels_from) + ".")
    if study.settings.quick:
        notes.append("QUICK run (smoke test: tiny step counts, CNN only): these numbers are not a measurement.")
    return notes + [IMAGENET_NOTE]


def _data_block(task: Task, present: list[str], missing: list[str]) -> dict[str, Any]:
    def counts(y: np.ndarray) -> list[int]:
        return np.bincount(y, minlength=len(task.classes)).tolist()
    return {"dataset": task.dataset, "source": task.source, "size": int(task.x_train.shape[-1]), "split": task.split,
            "train": {"slices": int(len(task.x_train)), "subjects": sorted(set(task.subject_train.tolist())),
                      "class_counts": counts(task.y_train)},
            "test": {"slices": int(len(task.x_test)), "subjects": sorted(set(task.subject_test.tolist())),
                     "class_counts": counts(task.y_test), "classes_present": present, "classes_missing": missing}}


def run_study(gen, task: Task, settings: Settings, leakage: dict[str, Any], *, model_folder: Path | None = None,
              command: str = "") -> dict[str, Any]:
    """Every regime x classifier x seed; returns the downstream.json report (validated against SCHEMA)."""
    import torch
    from tqdm.auto import tqdm

    cpu0, wall0 = time.process_time(), time.time()
    study = _Study(gen, task, settings, torch.device(settings.device), synth_labels_source(gen, task),
                   regimes_for(settings))
    _check_init(study)
    phases = {"train": 1, "pretrain-finetune": 2, "init-finetune": 1}
    total = len(settings.seeds) * sum(settings.steps[c] * phases[r["phases"]] for c in settings.classifiers
                                      for r in _regimes_of(study, c))
    study.bar = tqdm(total=total, desc="downstream (optimiser steps)", unit="step", disable=not settings.progress)
    results: dict[str, dict[str, Any]] = {c: {r["id"]: {"runs": []} for r in _regimes_of(study, c)}
                                          for c in settings.classifiers}
    records, cpu = [], {"generation": 0.0, **{c: 0.0 for c in settings.classifiers}}
    data = {"xr": torch.from_numpy(task.x_train), "yr": torch.from_numpy(task.y_train.astype(np.int64))}
    for seed in settings.seeds:
        t0 = time.process_time()
        pool_x, pool_y, record = _synthetic_pool(study, seed)
        cpu["generation"] += time.process_time() - t0
        data.update(xs=torch.from_numpy(pool_x), pool_y=pool_y,
                    subsets={f: stratified_subset(task.y_train, f, seed) for f in (0.1, 0.25)})
        for index, clf in enumerate(settings.classifiers):
            t0 = time.process_time()
            for rid, run in _classifier_runs(study, clf, index, seed, data, record).items():
                results[clf][rid]["runs"].append(run)
            cpu[clf] += time.process_time() - t0
        records.append(record)
    study.bar.close()
    _summaries(results, study.k)
    deltas = _deltas(results)
    present = [c for i, c in enumerate(task.classes) if (task.y_test == i).any()]
    missing = [c for c in task.classes if c not in present]
    report = {
        "schema_version": SCHEMA_VERSION, "kind": "medgan-downstream",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"id": gen.config.id, "arch": gen.config.generator.arch, "conditional": bool(gen.classes),
                  "classes": list(gen.classes), "condition": gen.config.generator.condition,
                  "resolution": gen.config.generator.resolution,
                  "folder": str(model_folder) if model_folder else None},
        "task": {"name": task.name, "classes": task.classes, "description": TASK_DESCRIPTIONS[task.name]},
        "data": _data_block(task, present, missing), "leakage_check": leakage,
        "synthetic": {"labels_from": study.labels_from, "note": _synthetic_note(study.labels_from),
                      "pool_per_seed": POOL_RATIO * len(task.x_train), "truncation": settings.truncation,
                      "seeds": records},
        "settings": {**_settings_block(settings), "init": study.init_info},
        "regimes": [dict(r) for r in study.regimes],
        "results": results, "deltas": deltas, "medigan": _medigan(results, deltas),
        "notes": _notes(study, leakage, present, missing),
        "timing": {"cpu_time_s": round(time.process_time() - cpu0, 2), "wall_time_s": round(time.time() - wall0, 2),
                   "threads": settings.threads, "cpu_s_by_part": {k: round(v, 2) for k, v in cpu.items()}},
        "command": command, "versions": _versions(), "figure": None,
    }
    problems = validate(report)
    if problems:  # a bug here, not a user error
        raise AssertionError("downstream.json does not match its schema: " + "; ".join(problems[:5]))
    return report


TASK_DESCRIPTIONS = {"level": "the slice's level: band of its position within the volume along the slicing axis "
                              "(5 bands, training.data)",
                     "plane": "the slicing plane of the slice",
                     "contrast": "the MR contrast of the slice's source series (T1, contrast-enhanced T1, PD; "
                                 "named per source in training.data)"}


def _settings_block(settings: Settings) -> dict[str, Any]:
    return {"seeds": settings.seeds, "classifiers": settings.classifiers, "steps": settings.steps,
            "batch_size": settings.batch_size, "lr": settings.lr, "finetune_lr": settings.lr * FINETUNE_LR_FACTOR,
            "optimizer": "AdamW (weight decay 1e-4), cosine decay to 0, batches drawn with replacement"
                         + (", class-balanced" if settings.balanced else "") + ", no augmentation, final weights "
                         "tested",
            "balanced_batches": settings.balanced,
            "quick": settings.quick, "threads": settings.threads, "device": settings.device,
            "pretrained_note": IMAGENET_NOTE}


def _versions() -> dict[str, str]:
    import torch
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__}


# ----------------------------------------------------------------------------- outputs
def plot(report: dict[str, Any], path: Path) -> Path:
    """Balanced accuracy per regime (bars: mean over seeds, whiskers: 95 % CI), one panel per classifier."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clfs = list(report["results"])
    k = len(report["task"]["classes"])
    fig, axes = plt.subplots(1, len(clfs), figsize=(6.5 * len(clfs), 4.2), squeeze=False)
    titles = {r["id"]: r["title"] for r in report["regimes"]}
    for ax, clf in zip(axes[0], clfs):
        ids = list(report["results"][clf])
        stats = [report["results"][clf][i]["summary"][HEADLINE] for i in ids]
        means = np.array([s["mean"] for s in stats])
        err = np.array([[s["mean"] - s["ci95"][0], s["ci95"][1] - s["mean"]] for s in stats]).T
        colours = ["#4c72b0" if i == "trtr" else "#dd8452" if i == "tstr" else "#55a868" for i in ids]
        ax.bar(range(len(ids)), means, yerr=err, capsize=3, color=colours)
        ax.axhline(1 / k, color="grey", ls=":", lw=1, label=f"chance (1/{k})")
        ax.axhline(report["results"][clf]["trtr"]["summary"][HEADLINE]["mean"], color="#4c72b0", ls="--", lw=1,
                   label="TRTR mean")
        ax.set_xticks(range(len(ids)), [titles.get(i, i) for i in ids], rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("balanced accuracy (held-out subjects)")
        n = len(report["settings"]["seeds"])
        ax.set_title(f"{CLASSIFIER_NAMES[clf]}: {report['task']['name']}, {n} seeds, 95 % CI", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{report['model']['id']}: downstream usefulness" + (" (QUICK)" if report["settings"]["quick"]
                                                                       else ""), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def config_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The compact block stored in config.json metrics["downstream"] (what the app's Models table shows)."""
    out: dict[str, Any] = {"task": report["task"]["name"], "metric": HEADLINE,
                           "labels_from": report["synthetic"]["labels_from"],
                           "seeds": len(report["settings"]["seeds"]), "quick": report["settings"]["quick"],
                           "leakage_check": report["leakage_check"]["status"], "file": "downstream.json",
                           "by_classifier": {}}
    for clf, res in report["results"].items():
        row: dict[str, Any] = {}
        for rid in ("trtr", "tstr", "mix_1_1"):
            if rid in res:
                s = res[rid]["summary"][HEADLINE]
                row[rid], row[f"{rid}_ci95"] = s["mean"], s["ci95"]
        for name in ("low10_gain", "low25_gain"):
            d = report["deltas"][clf].get(name)
            if d:
                row[name], row[f"{name}_ci95"] = d["stats"][HEADLINE]["mean"], d["stats"][HEADLINE]["ci95"]
        out["by_classifier"][clf] = row
    out["headline_classifier"] = "resnet18" if "resnet18" in out["by_classifier"] else next(iter(out["by_classifier"]))
    return out


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def summary_text(report: dict[str, Any]) -> str:
    lines = [f"{report['model']['id']}: task {report['task']['name']}, test {report['data']['test']['slices']} "
             f"slices of {', '.join(report['data']['test']['subjects'])}; leakage check: "
             f"{report['leakage_check']['message']}",
             f"synthetic labels: {report['synthetic']['labels_from']}"]
    for clf, res in report["results"].items():
        for rid, r in res.items():
            lines.append(f"  {clf:8s} {rid:18s} balanced accuracy {fmt_stat(r['summary'][HEADLINE])}")
        for name, d in report["deltas"][clf].items():
            s = d["stats"][HEADLINE]
            lines.append(f"  {clf:8s} {name:18s} {s['mean']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}] "
                         f"{d['verdict']}")
    lines += [f"note: {n}" for n in report["notes"]]
    lines.append(f"CPU time {report['timing']['cpu_time_s']:.1f} s, wall {report['timing']['wall_time_s']:.1f} s")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.downstream", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder (weights/<id>) or the id of a local model")
    p.add_argument("--task", choices=TASKS, default="level", help="label to classify (default level)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="a labelled slices .npz (training.data)")
    src.add_argument("--dataset", help="a built-in dataset (default: the one the model was trained on)")
    p.add_argument("--out", required=True, type=Path, help="output folder (downstream.json, downstream.png)")
    p.add_argument("--quick", action="store_true", help=f"smoke test: CNN only, {QUICK_STEPS} steps per regime")
    p.add_argument("--seeds", type=int, default=3, help="seeds per regime (>= 3, default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (seeds are SEED, SEED+1, ...)")
    p.add_argument("--classifier", choices=("cnn", "resnet18", "both"), default=None,
                   help="default both (--quick: cnn)")
    p.add_argument("--steps", type=int, help=f"optimiser steps per regime (default cnn {DEFAULT_STEPS['cnn']}, "
                                              f"resnet18 {DEFAULT_STEPS['resnet18']})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--init", help="a local .safetensors checkpoint to start one more regime from (fine-tuned on "
                                  "real); ImageNet weights cannot be downloaded here")
    p.add_argument("--truncation", type=float, default=1.0, help="ψ for the synthetic images (default 1)")
    p.add_argument("--balanced-batches", action="store_true",
                   help="draw every class equally often in training batches (for skewed tasks, e.g. contrast)")
    p.add_argument("--allow-slab-split", action="store_true",
                   help="run on a single-subject slab split (e.g. head-ct), reported as not subject-independent")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for generation and classifiers (default cpu)")
    p.add_argument("--no-write", action="store_true", help="write only into --out (not the model folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.seeds < 3:
        p.error("--seeds must be at least 3 (a 95 % interval over fewer seeds is not informative)")
    if args.threads < 1 or args.batch_size < 2 or (args.steps is not None and args.steps < 1):
        p.error("--threads >= 1, --batch-size >= 2 and --steps >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "training.downstream", *argv])
    try:
        from medgan.generator import Generator

        folder, write_folder = resolve_model(args.model)
        gen = Generator.from_folder(folder, device=args.device)
        tdata = dict(gen.config.training_data)
        source = args.data or args.dataset or tdata.get("name")
        if not source:
            raise DownstreamError("the model does not record its dataset: give --data FILE.npz or --dataset NAME")
        if args.data and not Path(args.data).is_file():
            raise DownstreamError(f"dataset file not found: {args.data}")
        task, ds = load_task(args.task, source, gen.config.generator.resolution, task_axes(args.task, tdata))
        gen_axes = tuple(tdata.get("axes") or (2,))
        leakage = leakage_check(tdata, ds, task, gen_axes, args.allow_slab_split)
        print(f"leakage check: {leakage['message']}", file=sys.stderr)
        if args.classifier is None:
            classifiers = ["cnn"] if args.quick else list(CLASSIFIERS)
        else:
            classifiers = list(CLASSIFIERS) if args.classifier == "both" else [args.classifier]
        steps = {c: args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS[c]) for c in classifiers}
        settings = Settings(seeds=[args.seed + i for i in range(args.seeds)], classifiers=classifiers, steps=steps,
                            batch_size=args.batch_size, lr=args.lr, threads=args.threads, device=args.device,
                            truncation=args.truncation, quick=args.quick, init=args.init,
                            progress=not args.quiet, balanced=args.balanced_batches)
        report = run_study(gen, task, settings, leakage, model_folder=None if args.no_write else write_folder,
                           command=command)
    except LeakageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MedganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["figure"] = "downstream.png"
    written = [plot(report, args.out / "downstream.png"), write_json(args.out / "downstream.json", report)]
    if write_folder is not None and not args.no_write:
        written.append(write_json(Path(write_folder) / "downstream.json", report))
        from medgan.config import ModelConfig
        config = ModelConfig.load(write_folder)
        config.metrics = {**config.metrics, "downstream": config_summary(report)}
        config.save(write_folder)
        written.append(Path(write_folder) / "config.json")
        try:
            from .card import write_card
            written.append(write_card(write_folder))
        except Exception as exc:  # the study's results are written; a card problem must not hide them
            print(f"warning: the card was not re-rendered: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(summary_text(report))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["SCHEMA", "validate", "run_study", "main", "scores", "summarize", "card_section", "make_classifier",
           "leakage_check", "LeakageError", "DownstreamError"]
