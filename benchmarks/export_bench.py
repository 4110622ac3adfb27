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
