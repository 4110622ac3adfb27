"""Latent-space controls beyond generate(): interpolation and style mixing (behind `Generator.interpolate/mix`).

Both run like generate(): under the generator's lock, in fixed tiles of `gen.tile` inputs (the last tile padded
with copies), so the same arguments always give the same pixels. A (seed, index)'s w (or z) is computed on the
same aligned tile of latents generate() maps, and every synthesis runs on tiles of the same shape as
generate()'s; a row's result then does not depend on its neighbours' values, so the end frames of an
interpolation equal `generate(index + 1, seed)[index]` exactly (tested), without generating them again.
"""
from __future__ import annotations

import secrets
from typing import Callable, ContextManager, Protocol, Sequence

import numpy as np
import torch

from . import limits
from .config import ModelConfig
from .errors import InvalidArgumentError
from .latent import latents, to_uint8
from .validation import as_int, check_label, check_seed, check_truncation



class Explorable(Protocol):
    """The part of medgan.generator.Generator that interpolation and mixing use (its public interface; this
    module does not import generator, which calls into it)."""

    id: str
    arch: str
    classes: list[str]
    tile: int
    device: torch.device
    net: torch.nn.Module
    config: ModelConfig

    def class_indices(self, count: int, seed: int, start: int, fixed: int | None) -> np.ndarray: ...

    def class_names(self, indices: np.ndarray) -> list[str]: ...

    def exclusive(self) -> ContextManager[None]: ...


def check_frames(frames: object) -> int:
    value, limit = as_int("frames", frames), limits.max_frames()
    if not 2 <= value <= limit:
        raise InvalidArgumentError(f"frames must be between 2 and {limit}, got {str(value)[:24]}")
    return value


def check_seed_list(name: str, seeds: object) -> list[int]:
    """Seeds from a sequence or a text: "1, 2, 3" or "random 4" (fresh random seeds); at most max_grid()."""
    limit = limits.max_grid()
    if isinstance(seeds, str):
        text = seeds.strip().lower()
        if text.startswith("random"):
            count = as_int(f"{name} (random N)", text[6:].strip() or "1")
            if not 1 <= count <= limit:
                raise InvalidArgumentError(f"{name}: random N must be between 1 and {limit}, got {count}")
            return [secrets.randbelow(2**31) for _ in range(count)]
        seeds = [part for part in text.replace(";", ",").replace(" ", ",").split(",") if part]
    if not isinstance(seeds, Sequence) or isinstance(seeds, (bytes, bytearray)):
        raise InvalidArgumentError(f"{name} must be a list of seeds or a text like '1, 2, 3' or 'random 4'")
    if not 1 <= len(seeds) <= limit:
        raise InvalidArgumentError(f"{name} must hold between 1 and {limit} seeds, got {len(seeds)}")
    try:
        return [check_seed(s) for s in seeds]
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{name}: {exc}") from None


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of latent rows a, b [1, d] at t [n] (DCGAN z: keeps the norm typical)."""
    cos = (a * b).sum() / (a.norm() * b.norm())
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    if float(omega) < 1e-6:
        return a + t[:, None] * (b - a)
    sin = torch.sin(omega)
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / sin


def run_tiles(gen: Explorable, inputs: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """fn over fixed tiles of gen.tile rows (last one padded with copies) -> uint8 images [n, …]."""
    tile, n, parts = gen.tile, inputs.shape[0], []
    for t0 in range(0, n, tile):
        chunk = inputs[t0:t0 + tile]
        if chunk.shape[0] < tile:
            chunk = torch.cat([chunk, chunk[-1:].expand(tile - chunk.shape[0], *chunk.shape[1:])])
        parts.append(to_uint8(fn(chunk.to(gen.device)))[:min(tile, n - t0)])
    return np.concatenate(parts)


def tile_latents(gen: Explorable, seed: int, index: int, label: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """z and classes of the aligned tile holding `index` (what generate() feeds its network), and the row."""
    first = index - index % gen.tile
    z = torch.from_numpy(latents(seed, gen.tile, gen.config.generator.latent_dim, first))
    return z, gen.class_indices(gen.tile, seed, first, label)


def style_ws(gen: Explorable, seeds: list[int], indices: list[int], truncation: float,
             label: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """w [n, w_dim] and class index per (seed, index): the very w generate() uses for that image (mapped on
    the same tile of latents)."""
    rows, classes = [], []
    for seed, index in zip(seeds, indices):
        z, tile_classes = tile_latents(gen, seed, index, label)
        labels = torch.from_numpy(tile_classes).to(gen.device) if gen.classes else None
        rows.append(gen.net.mapping(z.to(gen.device), labels, truncation)[index % gen.tile])
        classes.append(tile_classes[index % gen.tile] if gen.classes else -1)
    return torch.stack(rows), np.array(classes if gen.classes else [], dtype=np.int64)


def interpolate(gen: Explorable, seed_a: object, seed_b: object, frames: object = 8, *, index_a: object = 0,
                index_b: object = 0, truncation: object = 1.0, label: object = None) -> tuple[np.ndarray, dict]:
    """uint8 frames [frames, H, W] and their metadata (t, seeds, indices, classes, truncation)."""
    seed_a, seed_b, frames = check_seed(seed_a), check_seed(seed_b), check_frames(frames)
    index_a, index_b = _index("index_a", index_a), _index("index_b", index_b)
    truncation, label = check_truncation(truncation), check_label(label, gen.classes, gen.id)
    t = torch.linspace(0, 1, frames)
    with gen.exclusive():
        if gen.arch == "style":
            w, classes = style_ws(gen, [seed_a, seed_b], [index_a, index_b], truncation, label)
            path = w[:1] + t[:, None].to(w.device) * (w[1:] - w[:1])          # linear in w
            path[0], path[-1] = w[0], w[1]                                     # exactly, not up to rounding
            images = run_tiles(gen, path, lambda ws: gen.net.synthesis(ws.unsqueeze(1).expand(-1, gen.net.num_ws, -1)))
        else:
            dim = gen.config.generator.latent_dim
            za, zb = (torch.from_numpy(latents(s, 1, dim, i)) for s, i in ((seed_a, index_a), (seed_b, index_b)))
            if truncation != 1.0:
                za, zb = za * truncation, zb * truncation
            path = slerp(za, zb, t)
            path[0], path[-1] = za[0], zb[0]
            images = run_tiles(gen, path, lambda z: gen.net(z.view(z.shape[0], -1, 1, 1)))
            classes = np.empty(0, dtype=np.int64)
    names = gen.class_names(classes)
    meta = {"kind": "interpolation", "seed_a": seed_a, "seed_b": seed_b, "index_a": index_a, "index_b": index_b,
            "truncation": truncation, "space": "w (linear)" if gen.arch == "style" else "z (spherical)",
            "t": [round(float(x), 6) for x in t], "class_a": names[0] if names else None,
            "class_b": names[1] if names else None}
    return images, meta


def mix(gen: Explorable, row_seeds: object, col_seeds: object, *, crossover: object = None,
        truncation: object = 1.0, label: object = None) -> tuple[np.ndarray, dict]:
    """uint8 grid [rows, cols, H, W]: cell (r, c) = coarse styles (layers < crossover) of row seed r, fine
    styles of column seed c (image 0 of each seed), and its metadata."""
    if gen.arch != "style":
        raise InvalidArgumentError(f"mix: model {gen.id!r} is a {gen.arch.upper()} model: its single latent has no "
                                   f"per-layer styles to mix (style mixing needs a style-based model)")
    rows, cols = check_seed_list("row_seeds", row_seeds), check_seed_list("col_seeds", col_seeds)
    layers = gen.net.num_ws
    crossover = default_crossover(layers) if crossover is None or crossover == "" else as_int("crossover", crossover)
    if not 1 <= crossover <= layers - 1:
        raise InvalidArgumentError(f"crossover must be a layer between 1 and {layers - 1} for model {gen.id!r}, "
                                   f"got {str(crossover)[:24]}")
    truncation, label = check_truncation(truncation), check_label(label, gen.classes, gen.id)
    with gen.exclusive():
        w, classes = style_ws(gen, rows + cols, [0] * (len(rows) + len(cols)), truncation, label)
        w_rows, w_cols = w[:len(rows)], w[len(rows):]
        coarse = torch.arange(layers, device=w.device)[None, :, None] < crossover
        ws = torch.where(coarse, w_rows.repeat_interleave(len(cols), 0)[:, None], w_cols.repeat(len(rows), 1)[:, None])
        images = run_tiles(gen, ws, gen.net.synthesis)
    names = gen.class_names(classes)
    meta = {"kind": "style-mixing", "row_seeds": rows, "col_seeds": cols, "crossover": crossover, "layers": layers,
            "truncation": truncation, "row_classes": names[:len(rows)] or None, "col_classes": names[len(rows):] or None}
    return images.reshape(len(rows), len(cols), *images.shape[1:]), meta


def default_crossover(layers: int) -> int:
    """The middle layer: with 5 layers at 64² (4², 8², 16², 32², 64²), 4²–8² coarse, 16²–64² fine."""
    return max(1, layers // 2)


def _index(name: str, value: object) -> int:
    index = as_int(name, value)
    if not 0 <= index < 2**63:
        raise InvalidArgumentError(f"{name} must be between 0 and 2**63-1, got {str(index)[:24]}")
    return index
