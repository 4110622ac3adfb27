"""How the app's generations use the CPU's cores: adaptive, so a quiet machine lends a request every core and a
busy one does not make OpenMP threads spin for cores they cannot get.

Two decisions, both measured by `python -m benchmarks --sections threads` (quiet and with the cores busy):
- `choose_wait_policy()`, once, before torch loads (OpenMP reads OMP_WAIT_POLICY only then): an explicit
  OMP_WAIT_POLICY wins; otherwise PASSIVE (idle threads sleep at once) when the machine is already busy at
  start-up (the median of 5 run-queue samples over 0.1 s), else OpenMP's default (idle threads spin briefly
  between the many small parallel regions of one forward pass, then sleep), which is what lets a second core
  help on a quiet machine.
- `fair_share()`, around each generation: its thread count is the cores left by this process's other
  generations in flight and by the rest of the machine (threads of other processes waiting to run, from the
  run queue), at least 1. One thread has no worker threads to spin, so on a busy machine the default policy
  costs nothing; on a quiet one the call gets every core. The rest of the machine is measured as demand, not
  as CPU time: spinning threads of ours take CPU time from the others, which then looked idle (measured:
  a CPU-time estimate kept 2 spinning threads on a busy machine, 5x slower than 1 thread).
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

MIN_INTERVAL_S = 0.5   # calls within this long of the last estimate reuse it
M_ARENA_MAX = -8       # glibc's mallopt() parameter for the number of malloc arenas
SERVER_ARENAS = 2


def cap_malloc_arenas(arenas: int = SERVER_ARENAS, environ: dict | None = None) -> bool:
    """Cap glibc's malloc arenas for a long-running server (mallopt M_ARENA_MAX), unless MALLOC_ARENA_MAX is set
    (glibc applied that at start-up). Each request of the app runs in a thread of its own
    (limits.run_with_time_limit), and glibc's default of 8 arenas per core lets threads spread their allocations
    over many heaps that each keep freed memory: measured on the app (1,500 plain-HTTP /generate calls of 4
    images), RSS still crept up ~30 KiB per call with the default and ~1 KiB with 2 arenas. Returns whether the
    cap was applied (not on other C libraries)."""
    import ctypes
    import ctypes.util

    if "MALLOC_ARENA_MAX" in (os.environ if environ is None else environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.gnu_get_libc_version and libc.mallopt(M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # not glibc: musl, macOS, Windows
        return False


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _runnable_others() -> int | None:
    """Threads of OTHER processes that want a core right now: /proc/stat's procs_running (every runnable
    thread on the machine) less this process's threads in state R (its spinning OpenMP workers included).
    Demand, not consumption: CPU time would under-count others exactly when our spinning threads crowd them out."""
    try:
        with open("/proc/stat") as fh:
            running = next(int(line.split()[1]) for line in fh if line.startswith("procs_running"))
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat") as fh:
                    own += fh.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue  # the thread ended meanwhile
    except (OSError, StopIteration, ValueError):
        return None
    return max(0, running - own)


def sampled_others(samples: int = 3, gap_s: float = 0.001) -> float | None:
    """The median of `samples` run-queue readings `gap_s` apart (the run queue flickers), or None off Linux."""
    readings = []
    for k in range(samples):
        readings.append(_runnable_others())
        if readings[-1] is None:
            return None
        if k + 1 < samples:
            time.sleep(gap_s)
    return float(sorted(readings)[len(readings) // 2])


class Usage:
    """Cores the REST of the machine wants (`sampled_others`), re-estimated at most every `MIN_INTERVAL_S`;
    the 1-minute load average less this process's share where /proc is absent."""

    def __init__(self) -> None:
        self.at, self.own, self.others = time.monotonic(), time.process_time(), None

    def others_now(self, min_interval_s: float = MIN_INTERVAL_S, samples: int = 3, gap_s: float = 0.001) -> float:
        now = time.monotonic()
        if self.others is not None and now - self.at < min_interval_s:
            return self.others
        others = sampled_others(samples, gap_s)
        if others is None:
            own = time.process_time()
            others = max(0.0, _load_average() - own_share(own - self.own, now - self.at))
            self.own = own
        self.at, self.others = now, others
        return others


def own_share(cpu_s: float, wall_s: float) -> float:
    return cpu_s / wall_s if wall_s > 0 else 0.0


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_wait_policy(environ: dict | None = None, sample_s: float = 0.1) -> str:
    """Set OMP_WAIT_POLICY (before torch is imported) unless it is set; returns the policy in effect. Busy =
    other processes' runnable threads reach (cores - 0.5), the median of 5 samples over `sample_s`."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_WAIT_POLICY"):
        return environ["OMP_WAIT_POLICY"].upper()
    others = Usage().others_now(min_interval_s=0, samples=5, gap_s=sample_s / 4)
    if others >= cores() - 0.5:  # no spare core now: never spin
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
