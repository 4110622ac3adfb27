"""Resource limits of the app and the service layer, each read from one environment variable.

| variable                    | default | bounds                                                        |
|-----------------------------|---------|---------------------------------------------------------------|
| MEDGAN_MAX_COUNT            | 16      | images per app request (the count slider's maximum)           |
| MEDGAN_MAX_COUNT_PER_CALL   | 4096    | images per `Generator.generate` call (Python API)             |
| MEDGAN_CONCURRENCY          | 2       | requests generating at once (/generate and /download share it)|
| MEDGAN_QUEUE_SIZE           | 64      | requests waiting; more are refused with "queue is full"       |
| MEDGAN_REQUEST_TIMEOUT_S    | 300     | seconds a request may run before it is answered with an error (0: none); a backstop above medigan's own worker limits |
| MEDGAN_MAX_PARAMS           | 1e8     | parameters a config.json may describe (checked before allocating) |
| MEDGAN_MAX_LOADED_MODELS    | 8       | generators kept in memory (LRU)                               |
| MEDGAN_EXPORT_RETENTION_S   | 3600    | age after which download zips are deleted                     |
| MEDGAN_CACHE_CLEAN_S        | 600     | how often Gradio's file cache is swept                        |
| MEDGAN_CACHE_MAX_AGE_S      | 3600    | age after which Gradio's cached files are deleted             |

A bad value stops start-up with a ConfigError naming the variable, rather than running unbounded.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Any, Callable, TypeVar

from .errors import ConfigError, GenerationError

T = TypeVar("T")


def env_number(name: str, default: float, *, minimum: float = 0, integer: bool = True) -> Any:
    """An int (or float) from the environment, at least `minimum`; a ConfigError names a bad value."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default) if integer else float(default)
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} >= {minimum:g}, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {raw[:40]!r}")
    return value


def max_count() -> int:
    return env_number("MEDGAN_MAX_COUNT", 16, minimum=1)


def concurrency() -> int:
    return env_number("MEDGAN_CONCURRENCY", 2, minimum=1)


def queue_size() -> int:
    return env_number("MEDGAN_QUEUE_SIZE", 64, minimum=1)


def request_timeout_s() -> float:
    return env_number("MEDGAN_REQUEST_TIMEOUT_S", 300, minimum=0, integer=False)


def export_retention_s() -> float:
    return env_number("MEDGAN_EXPORT_RETENTION_S", 3600, minimum=0, integer=False)


def gradio_cache() -> tuple[int, int]:
    """(frequency, age) in seconds for `gr.Blocks(delete_cache=...)`; Gradio ignores zeros, so >= 1."""
    return (env_number("MEDGAN_CACHE_CLEAN_S", 600, minimum=1), env_number("MEDGAN_CACHE_MAX_AGE_S", 3600, minimum=1))


def summary() -> dict[str, Any]:
    """Every limit in effect (for logs, README checks and tests)."""
    return {"max_count": max_count(), "concurrency": concurrency(), "queue_size": queue_size(),
            "request_timeout_s": request_timeout_s(), "export_retention_s": export_retention_s(),
            "max_loaded_models": env_number("MEDGAN_MAX_LOADED_MODELS", 8, minimum=1),
            "max_params": env_number("MEDGAN_MAX_PARAMS", 100_000_000, minimum=1),
            "gradio_cache": gradio_cache()}


# --- per-request time limit ------------------------------------------------------------------------
# A Python thread cannot be killed, so a request over its limit is answered with an error while its
# work finishes in the background. Such overdue work still holds CPU, so while as many requests as
# the concurrency limit are overdue, new ones are refused instead of piling up unbounded threads.
_overdue = 0
_overdue_lock = threading.Lock()


def overdue() -> int:
    with _overdue_lock:
        return _overdue


def run_with_time_limit(fn: Callable[..., T], *args: Any, seconds: float | None = None,
                        max_overdue: int | None = None) -> T:
    """fn(*args), or a GenerationError once `seconds` pass (None: MEDGAN_REQUEST_TIMEOUT_S; 0: no limit)."""
    global _overdue
    seconds = request_timeout_s() if seconds is None else seconds
    if not seconds:
        return fn(*args)
    limit = concurrency() if max_overdue is None else max_overdue
    with _overdue_lock:
        if _overdue >= limit:
            raise GenerationError("The server is still finishing earlier requests that ran over their time "
                                  "limit; please try again in a minute.")
    box: dict[str, Any] = {}
    lock = threading.Lock()  # decides, once, whether the result is delivered or the work is overdue

    def work() -> None:
        global _overdue
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        with lock:
            box["done"] = True
            if box.get("abandoned"):
                with _overdue_lock:
                    _overdue -= 1
        finished.set()

    finished = threading.Event()
    threading.Thread(target=work, daemon=True, name=f"medgan-request-{getattr(fn, '__name__', 'fn')}").start()
    if not finished.wait(seconds):
        with lock:
            if not box.get("done"):
                box["abandoned"] = True
                with _overdue_lock:
                    _overdue += 1
                raise GenerationError(f"The request did not finish within its time limit of {seconds:g} s; "
                                      "try a smaller count, or try again later.")
    if "error" in box:
        raise box["error"]
    return box["value"]
