"""Training throughput: our Trainer.train_step vs the PyTorch-examples DCGAN loop, same size and batch.

Both train on the same in-memory uint8 images; a step = one D update (real + fake) and one G update.
Steps alternate (ours, reference, ours, ...) so load from other processes hits both alike. The `dcgan`
recipe is the like-for-like comparison (BCE, BN in D, no augmentation/R1/EMA); `small-data` (DiffAugment,
spectral norm, lazy R1, EMA) is shown for its cost, without a target.
"""
from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch

from .harness import interleaved, ratio, summary
from .reference_dcgan import ReferenceTrainer


def run_training(quick: bool) -> dict[str, Any]:
    try:
        from training.gan.config import make_config
        from training.gan.trainer import Trainer
    except ImportError as exc:
        return {"error": f"training.train is not importable: {exc}"}
    size, batch = (32, 16) if quick else (64, 128)
    rounds = 2 if quick else 5
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (max(256, 4 * batch), 1, size, size), dtype=np.uint8)
    out: dict[str, Any] = {"size": size, "batch": batch, "includes": __doc__.split("\n\n", 1)[1].strip(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="medgan-bench-train-") as tmp:
        ours = {}
        for recipe in ("dcgan",) if quick else ("dcgan", "small-data"):
            # Same widths as the reference (64) for a like-for-like step; batch as the reference's.
            cfg = make_config({"recipe": recipe, "size": size, "batch_size": batch, "base_width": 64, "d_width": 64,
                               "out": tmp, "steps": 10})
            ours[recipe] = Trainer(cfg, images)
        ref_cfg = ours["dcgan"].gcfg
        reference = ReferenceTrainer(torch.from_numpy(images), ref_cfg, batch, ndf=64)
        contenders = {f"medgan {recipe}": trainer.train_step for recipe, trainer in ours.items()}
        times = interleaved({**contenders, "reference": reference.step}, rounds, 0.0)
    for name, values in times.items():
        row = {"contender": name, **summary(values, batch)}
        if name != "reference":
            row["vs_reference"] = round(ratio(times, "reference", name), 3)
        out["rows"].append(row)
    return out
