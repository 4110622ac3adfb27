"""How the app's generations use the CPU's cores: adaptive, so a quiet machine lends a request every core and a
busy one does not make OpenMP threads spin for cores they cannot get.

Two decisions, both measured by `python -m benchmarks --sections threads` (quiet and with the cores busy):
- `choose_wait_policy()`, once, before torch loads (OpenMP reads OMP_WAIT_POLICY only then): an explicit
  OMP_WAIT_POLICY wins; otherwise PASSIVE (idle threads sleep at once) when the machine is already busy at
  start-up (0.1 s of /proc/stat), else OpenMP's default (idle threads spin briefly between the many small parallel regions of one
  forward pass, then sleep), which is what lets a second core help on a quiet machine.
- `fair_share()`, around each generation: its thread count is the cores left by this process's other
  generations in flight and by the rest of the machine (its busy time minus this process's CPU time since
  the previous generation, from /proc/stat), at least 1. One thread has no worker threads to spin, so on a busy machine the default policy costs
  nothing; on a quiet one the call gets every core.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

MIN_INTERVAL_S = 0.5   # shorter intervals since the last sample reuse its estimate (jiffies are 10 ms)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Usage:
    """Cores the REST of the machine is using: machine busy time minus this process's CPU time, per wall
    second, over the interval since the previous sample (the 1-minute load average where /proc is absent)."""

    def __init__(self) -> None:
        self.at, self.busy, self.own, self.others = time.monotonic(), _busy_seconds(), time.process_time(), 0.0

    def others_now(self, min_interval_s: float = MIN_INTERVAL_S) -> float:
        now, busy, own = time.monotonic(), _busy_seconds(), time.process_time()
        if busy is None or self.busy is None:
            return max(0.0, _load_average() - own_share(own - self.own, now - self.at))
        if now - self.at >= min_interval_s:
            self.others = max(0.0, ((busy - self.busy) - (own - self.own)) / (now - self.at))
            self.at, self.busy, self.own = now, busy, own
        return self.others


def own_share(cpu_s: float, wall_s: float) -> float:
    return cpu_s / wall_s if wall_s > 0 else 0.0


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_wait_policy(environ: dict | None = None, sample_s: float = 0.1) -> str:
    """Set OMP_WAIT_POLICY (before torch is imported) unless it is set; returns the policy in effect. Busy =
    the rest of the machine uses more than (cores - 0.5) over `sample_s`."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_WAIT_POLICY"):
        return environ["OMP_WAIT_POLICY"].upper()
    usage = Usage()
    time.sleep(sample_s)
    if usage.others_now(min_interval_s=0) >= cores() - 0.5:  # no spare core now: never spin
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "PASSIVE"
    return "DEFAULT"


_lock = threading.Lock()
_in_flight = 0
_usage: Usage | None = None


def threads_for(in_flight: int, others: float, available: int, spinning: bool) -> int:
    """Threads for one of `in_flight` generations: an equal share of the cores; 1 when OpenMP's threads would
    spin (its default policy) while the rest of the machine leaves no spare core (measured: 2 spinning
    threads on a busy 2-core machine take 5x the time of 1 thread; sleeping ones are faster than 1 thread)."""
    share = max(1, available // max(1, in_flight))
    return 1 if spinning and others >= available - 0.5 else share


@contextmanager
def fair_share() -> Iterator[int]:
    """Set torch's thread count for the generation inside (process-wide: concurrent calls re-set it, each to
    its share); yields the count."""
    import torch
    global _in_flight, _usage
    with _lock:
        _usage = _usage or Usage()
        _in_flight += 1
        spinning = os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
        count = threads_for(_in_flight, _usage.others_now(), cores(), spinning)
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        with _lock:
            _in_flight -= 1


__all__ = ["Usage", "choose_wait_policy", "cores", "fair_share", "threads_for"]
