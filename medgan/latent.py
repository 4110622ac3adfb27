"""Latents, class draws and pixel conversion: the per-index random streams that make image i depend only on
(seed, i), shared by generate(), the latent controls (medgan.explore) and training."""
from __future__ import annotations

import numpy as np
import torch

from .validation import check_seed


def latents(seed: int, count: int, latent_dim: int, start: int = 0) -> np.ndarray:
    """Latent vectors for indices start..start+count-1: one independent PCG64 stream per (seed, index)."""
    seed = check_seed(seed)
    out = np.empty((count, latent_dim), dtype=np.float32)
    for row, index in enumerate(range(start, start + count)):
        out[row] = np.random.default_rng([seed, index]).standard_normal(latent_dim, dtype=np.float32)
    return out


def sample_labels(seed: int, count: int, num_classes: int, start: int = 0) -> np.ndarray:
    """A class per index for label=None: its own PCG64 stream per (seed, index), apart from the latent's."""
    return np.array([np.random.default_rng([seed, index, 1]).integers(num_classes)
                     for index in range(start, start + count)], dtype=np.int64)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float [n, C, H, W] -> uint8 [n, H, W] (grayscale) or [n, H, W, C]."""
    pixels = ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)
