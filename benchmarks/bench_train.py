"""Training throughput (img/s) of the training CLI per recipe and batch size, on this machine.

    python benchmarks/bench_train.py [--dataset brain-t1] [--size 64] [--seconds 30] [--out /tmp/bench-train]

Each configuration runs `python -m training.train ... --max-minutes seconds/60` in a fresh process and
reports the median img/s (wall) and img per CPU-second of its log intervals after the first (warm-up)
one, counting training steps only (sampling, checkpoints and export excluded). Wall numbers depend on
what else runs on the machine (the 1-minute load average is printed); img/CPU-s much less so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [("dcgan", 128, []), ("dcgan", 64, []), ("small-data", 128, []), ("small-data", 64, []),
           ("small-data", 64, ["--base-width", "64", "--d-width", "64"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="brain-t1")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--out", default="/tmp/bench-train")
    args = ap.parse_args()
    rows = []
    for recipe, batch, extra in CONFIGS:
        name = f"{recipe}-b{batch}" + ("-w64" if extra else "")
        out = Path(args.out) / name
        cmd = [sys.executable, "-m", "training.train", "--dataset", args.dataset, "--size", str(args.size),
               "--recipe", recipe, "--batch-size", str(batch), *extra, "--steps", "1000000", "--log-every", "1",
               "--sample-every", "1000000", "--ckpt-every", "1000000", "--max-minutes", str(args.seconds / 60),
               "--out", str(out)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rate = statistics.median(r["img_per_s"] for r in records[1:] or records)
        cpu_rate = statistics.median(r["img_per_cpu_s"] for r in records[1:] or records)
        config = json.loads((out / "model" / "config.json").read_text())["training"]["config"]
        rows.append((name, batch, config["base_width"], config["d_width"], rate, cpu_rate,
                     1000 * batch / rate / 60, os.getloadavg()[0]))
    print(f"{'run':<22} {'batch':>5} {'G w':>4} {'D w':>4} {'img/s':>7} {'img/CPU-s':>9} "
          f"{'min/1000 steps':>15} {'load':>5}")
    for name, batch, gw, dw, rate, cpu_rate, minutes, load in rows:
        print(f"{name:<22} {batch:>5} {gw:>4} {dw:>4} {rate:>7.1f} {cpu_rate:>9.1f} {minutes:>15.1f} {load:>5.1f}")


if __name__ == "__main__":
    main()
