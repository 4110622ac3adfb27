"""Timing on a noisy machine: contenders alternate in the same run and are compared by median ratios.

Each round runs every contender once (in a rotating order), so slow spells from other processes hit all
of them alike; the ratio of two contenders is taken per round and the median over rounds is reported.
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np

from medgan.perf import cpu_name


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else math.nan


def interleaved(contenders: dict[str, Callable[[], Any]], rounds: int, min_seconds: float = 0.0,
                warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each contender, `rounds` samples each, contenders alternating round by round.

    With `min_seconds`, a sample repeats the call until that much time has passed and reports the mean,
    so very short calls are not dominated by timer and scheduler noise. `clock=time.thread_time` (with
    one torch thread) counts only this thread's CPU time: what the call costs, not how long others ran.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, calls, began = contenders[name], 0, clock()
            while True:
                fn()
                calls += 1
                elapsed = clock() - began
                if elapsed >= min_seconds:
                    break
            times[name].append(elapsed / calls)
    return times


def ratio(times: dict[str, list[float]], slower: str, faster: str) -> float:
    """Median over rounds of time(slower) / time(faster): > 1 means `faster` is faster."""
    return statistics.median(a / b for a, b in zip(times[slower], times[faster]))


def summary(seconds: list[float], items: int = 1) -> dict[str, float]:
    med = statistics.median(seconds)
    return {"median_ms": round(med * 1e3, 3), "p95_ms": round(percentile(seconds, 95) * 1e3, 3),
            "min_ms": round(min(seconds) * 1e3, 3), "items_per_s": round(items / med, 1), "samples": len(seconds)}


def machine() -> dict[str, Any]:
    import torch
    info: dict[str, Any] = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch_interop_threads": torch.get_num_interop_threads(), "torch": torch.__version__,
                            "python": platform.python_version(), "platform": platform.platform(),
                            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
                            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info
