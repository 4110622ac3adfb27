"""Image grids: the one helper every contact sheet, sample grid and style-mixing figure goes through."""
from __future__ import annotations

import numpy as np


def grid(images: np.ndarray, cols: int = 8, pad: int = 2, fill: int = 0) -> np.ndarray:
    """uint8 [n, H, W] (or [n, H, W, C]) -> one image, `cols` tiles per row, `pad` pixels of `fill` between
    and around tiles; missing tiles in the last row stay `fill`."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return out


def mixing_figure(grid_images: np.ndarray, row_sources: np.ndarray, col_sources: np.ndarray, pad: int = 2,
                  fill: int = 0) -> np.ndarray:
    """StyleGAN's style-mixing figure: a blank corner, the column sources as a header row, the row sources as a
    header column, and cell (r, c) below/right of them. grid_images [R, C, H, W]; sources [R|C, H, W]."""
    rows, cols, h, w = grid_images.shape[:4]
    blank = np.full((1, h, w), fill, np.uint8)
    tiles = [blank, col_sources]
    for r in range(rows):
        tiles += [row_sources[r:r + 1], grid_images[r]]
    return grid(np.concatenate(tiles), cols=cols + 1, pad=pad, fill=fill)
