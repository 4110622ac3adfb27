"""The study's design: tasks, classifiers, metrics, step counts and the regimes compared (one definition each)."""
from __future__ import annotations

from typing import Any

from medgan.errors import MedganError

SCHEMA_VERSION = 1
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

TASK_DESCRIPTIONS = {"level": "the slice's level: band of its position within the volume along the slicing axis "
                              "(5 bands, training.data)",
                     "plane": "the slicing plane of the slice",
                     "contrast": "the MR contrast of the slice's source series (T1, contrast-enhanced T1, PD; "
                                 "named per source in training.data)"}


class DownstreamError(MedganError, ValueError):
    """A study that cannot run as asked (data, task, model, checkpoint); the CLI exits with status 2."""


class LeakageError(DownstreamError):
    """The test split holds a subject the generator (or the classifier) was trained on."""
