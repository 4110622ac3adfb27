"""The summary files of a GPU training run (benchmarks/gpu_train.sh): throughput.csv and gpu.json.

    python -m benchmarks.gpu_report RUN_DIR OUT_DIR
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import torch


def report(run_dir: Path, out: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r for r in records if "img_per_s" in r]
    shutil.copy(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    (out / "throughput.csv").write_text("time_s,step,img_per_s\n" + "".join(
        f"{r['time_s']},{r['step']},{r['img_per_s']}\n" for r in rates))
    config = json.loads((out / "model" / "config.json").read_text())
    training = config.get("training", {})
    summary = {"device": training.get("hardware", {}).get("gpu") or "cpu (no GPU)",
               "torch": torch.__version__, "cuda": torch.version.cuda,
               "precision": training.get("hardware", {}).get("precision", {}),
               "steps": training.get("steps"), "images_seen": training.get("images_seen"),
               "wall_time_s": training.get("wall_time_s"),
               "median_img_per_s": statistics.median(r["img_per_s"] for r in rates) if rates else None}
    (out / "gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    print(json.dumps(report(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
