"""Cheap FID during training: a run's quality-vs-CPU-time curve.

Every `fid_every` steps the trainer exports its EMA generator through medgan's own `Generator` (so the
images are exactly what users would get), embeds `fid_images` of them with the bundled Inception, and
compares them with the cached features of the training slices: all of them, or a seeded sample of FID_REAL_MAX
from a larger set (a dataset folder need not fit in memory, and Inception on every slice would cost more than
the training). Few images make this FID biased upward (compare points of one curve, or curves at the same count,
not with `training.evaluate`'s 2,000-image FID).
"""
from __future__ import annotations

import time

import numpy as np

from ..evaluation.features import FeatureCache, InceptionExtractor
from ..evaluation.metrics import fid

FID_SEED = 987654  # a latent seed apart from the sample grid's
FID_REAL_MAX = 10_000  # training slices compared with at most (FID references commonly hold 10k-50k images)


def fid_reference(images) -> np.ndarray:
    """uint8 [n, H, W]: the training slices the curve compares with; `images` an array or a lazy ShardImages
    [N, 1, H, W], of which only the sampled rows are read."""
    if len(images) <= FID_REAL_MAX:
        return np.asarray(images)[:, 0]
    rows = np.sort(np.random.default_rng(FID_SEED).choice(len(images), FID_REAL_MAX, replace=False))
    return np.asarray(images[rows])[:, 0]


class TrainFID:
    def __init__(self, images: np.ndarray, count: int, name: str = "train"):
        self.count = count
        self.extractor = InceptionExtractor(batch=50)
        self.cache = FeatureCache(images, self.extractor, name=name)
        self.real: np.ndarray | None = None

    def __call__(self, generator) -> dict[str, float]:
        """{"fid": …, "fid_images": n, "fid_cpu_s": CPU seconds this took}."""
        began = time.process_time()
        if self.real is None:
            self.real, _ = self.cache.get(np.arange(len(self.cache.images)), desc="Inception (training slices)")
        fake = generator.generate(self.count, seed=FID_SEED, output_type="np")
        features = self.extractor(fake, progress=False)
        return {"fid": round(fid(features, self.real), 3), "fid_images": self.count,
                "fid_cpu_s": round(time.process_time() - began, 1)}
