"""Dataset export throughput: `python -m medgan.dataset MODEL --count N --out DIR --workers K`, K = 1 and 2.

Each run is a fresh process writing PNG shards; images/min counts the whole command (interpreter and
model start-up included), alternating K between rounds.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .models import ROOT, BenchModel


def run_export(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    m = models[0]
    count, rounds = (32, 1) if quick else (2048, 2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="medgan-bench-export-") as tmp:
        for r in range(rounds):
            for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                out = Path(tmp) / f"r{r}-w{workers}"
                cmd = [sys.executable, "-m", "medgan.dataset", str(m.folder), "--count", str(count), "--out", str(out),
                       "--workers", str(workers), "--shard-size", str(max(16, count // 8)), "--quiet"]
                began = time.perf_counter()
                proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
                if proc.returncode != 0:
                    return {"error": f"medgan.dataset failed ({proc.returncode}): {proc.stderr[-400:]}"}
                times[workers].append(time.perf_counter() - began)
                files = len(list(out.glob("shard-*/*.png")))
                if files != count:
                    return {"error": f"medgan.dataset wrote {files} PNGs, expected {count}"}
    rows = []
    for workers, values in times.items():
        best = sorted(values)[len(values) // 2]
        rows.append({"workers": workers, "seconds": round(best, 2), "images_per_min": round(count / best * 60)})
    return {"model": m.id, "count": count, "format": "png", "rounds": rounds, "rows": rows,
            "speedup_2_vs_1": round(rows[0]["seconds"] / rows[1]["seconds"], 3)}


DATASET_MODEL = "brain-t1-style-64"  # conditional: the parquet rows carry a ClassLabel


def run_dataset_formats(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """Parquet (+ card) beside PNG shards, in-process export_dataset with the model loaded once, 1 thread; and the
    generation alone, the floor both stand on. images/s counts the whole export (encoding, files, card or
    manifest). Contenders alternate round by round (harness.interleaved)."""
    import shutil

    import torch

    from medgan.dataset import export_dataset
    from medgan.generator import Generator

    from .harness import interleaved, ratio

    folder = ROOT / "weights" / DATASET_MODEL
    folder = folder if (folder / "config.json").is_file() else models[0].folder
    gen = Generator.from_folder(folder)
    count, rounds = (32, 2) if quick else (1024, 5)
    shard = max(8, count // 4)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="medgan-bench-formats-") as tmp:
        def export(fmt: str) -> None:
            out = Path(tmp) / fmt
            shutil.rmtree(out, ignore_errors=True)
            export_dataset(str(folder), count, out, fmt, shard_size=shard, progress=False, generator=gen)
            sizes[fmt] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

        def generate_only() -> None:
            for begin in range(0, count, 256):
                gen.generate(min(256, count - begin), 0, start=begin, output_type="np")

        try:
            times = interleaved({"generate only": generate_only, "png": lambda: export("png"),
                                 "parquet": lambda: export("parquet")}, rounds=rounds)
        finally:
            torch.set_num_threads(previous)
    med = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    per_round = [png / other for png, other in zip(times["png"], times["parquet"])]
    rows = [{"contender": name, "median_s": round(med[name], 3), "images_per_s": round(count / med[name], 1),
             "seconds": [round(t, 3) for t in times[name]],
             "bytes_per_image": round(sizes[name] / count) if name in sizes else None,
             "vs_png": round(ratio(times, "png", name), 3)} for name in times]
    return {"model": gen.id, "count": count, "shard_size": shard, "rounds": rounds, "threads": 1, "rows": rows,
            "parquet_vs_png_range": [round(min(per_round), 3), round(max(per_round), 3)]}
