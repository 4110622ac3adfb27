"""Roofline (model FLOPs vs measured matmul peak), time vs count, and where a /generate's time goes."""
from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from medgan.export import png_bytes
from medgan.generator import latents, to_uint8
from medgan.nets import generator_flops

from .harness import interleaved, ratio, summary
from .inference import SEED, load_pair
from .models import BenchModel


def run_roofline(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """Achieved GFLOP/s of generate(64) over the peak of a 2048² fp32 matmul, measured alternately."""
    size = 1024 if quick else 2048
    a, b = torch.randn(size, size), torch.randn(size, size)
    rounds, min_s = (3, 0.05) if quick else (11, 0.2)
    rows = []
    for m in models:
        gen, _ = load_pair(m)
        count = 16 if quick else 64
        times = interleaved({"matmul": lambda: a @ b, "generate": lambda: gen.generate(count, SEED, output_type="np")},
                            rounds, min_s)
        flops = generator_flops(m.config.generator)
        peak = [2 * size ** 3 / t / 1e9 for t in times["matmul"]]
        achieved = [flops * count / t / 1e9 for t in times["generate"]]
        fractions = sorted(x / p for x, p in zip(achieved, peak))
        rows.append({"model": m.id, "gflop_per_image": round(flops / 1e9, 4), "count": count,
                     "matmul_size": size, "threads": torch.get_num_threads(),
                     "peak_gflops": round(float(np.median(peak)), 1),
                     "achieved_gflops": round(float(np.median(achieved)), 1),
                     "fraction_of_peak": round(fractions[len(fractions) // 2], 3),
                     "images_per_s": round(count / float(np.median(times["generate"])), 1)})
    return {"rows": rows}


def linear_fit(x: list[float], y: list[float]) -> dict[str, float]:
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * np.asarray(x) + intercept
    ss_res = float(((np.asarray(y) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(y) - np.mean(y)) ** 2).sum()) or 1e-30
    return {"ms_per_image": round(slope * 1e3, 4), "fixed_ms": round(intercept * 1e3, 3), "r2": round(1 - ss_res / ss_tot, 5)}


def run_scaling(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """generate(count) time for count = 1 .. 1024 (doubling), and a least-squares line through it."""
    counts = [1, 4, 16, 64] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    rows = []
    for m in models[:1] if quick else models:
        gen, _ = load_pair(m)
        cut = [n for n in counts if n * (m.config.resolution // 64) ** 2 <= 1024]  # 128²: up to 256 images
        times = interleaved({n: (lambda n=n: gen.generate(n, SEED, output_type="np")) for n in cut},
                            2 if quick else 3, 0.0)
        med = {n: float(np.median(t)) for n, t in times.items()}
        rows.append({"model": m.id, "points": [{"count": n, "ms": round(s * 1e3, 2), "images_per_s": round(n / s, 1)}
                                               for n, s in med.items()],
                     "fit": linear_fit(cut, [med[n] for n in cut])})
    return {"rows": rows}


def run_profile(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """A /generate of 16 without the web layer, step by step, and PNG encoding at two zlib levels."""
    m = models[0]
    gen, _ = load_pair(m)
    nz, count = m.config.generator.latent_dim, 16
    z = torch.from_numpy(latents(SEED, count, nz)).view(count, nz, 1, 1)
    with torch.inference_mode():
        floats = gen.net(z[:8])
    arrays = gen.generate(count, SEED, output_type="np")
    images = [Image.fromarray(a) for a in arrays]

    def png(level: int):
        for im in images:
            im.save(io.BytesIO(), format="png", compress_level=level)
    steps = {
        "latents (numpy, per index)": lambda: latents(SEED, count, nz),
        "forward (2 tiles of 8)": lambda: [gen.net(z[i:i + 8]) for i in (0, 8)],
        "uint8 conversion": lambda: [to_uint8(floats) for _ in (0, 8)],
        "generate(16, np) total": lambda: gen.generate(count, SEED, output_type="np"),
        "PIL images from arrays": lambda: [Image.fromarray(a) for a in arrays],
        "PNG encode x16 (PIL default, level 6)": lambda: png(6),
        "PNG encode x16 (level 1)": lambda: png(1),
        "medgan.export.png_bytes x16": lambda: [png_bytes(a, {"Synthetic": "true"}) for a in arrays],
    }
    with torch.inference_mode():
        times = interleaved(steps, 3 if quick else 11, 0.02 if quick else 0.1)
    return {"model": m.id, "count": count, "steps": {k: summary(v, count) for k, v in times.items()},
            "png_level6_vs_level1": round(ratio(times, "PNG encode x16 (PIL default, level 6)",
                                                "PNG encode x16 (level 1)"), 3)}
