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
| MEDGAN_CACHE_MAX_MB         | 512     | total size of downloads + Gradio's cached images; the oldest go first beyond it |
| MEDGAN_MAX_UPLOAD_MB        | 0       | a file Gradio's upload route accepts; 0: the route is closed (no upload widget) |
| MEDGAN_MAX_BODY_KB          | 64      | any other request body (KiB), checked before it is parsed or queued |
| MEDGAN_MAX_TEXT_CHARS       | 512     | every string in a request (JSON body, query string) |
| MEDGAN_MAX_PER_CLIENT       | 4       | events one client may have queued or running in Gradio's queue; more: 429 |
| MEDGAN_MAX_SESSIONS         | 256     | sessions whose state Gradio keeps (the oldest is dropped beyond it) |
| MEDGAN_GPU_DURATION_S       | 60      | ZeroGPU duration of /generate and /download (Spaces only)     |
| MEDGAN_MEDIGAN_TIMEOUT_S    | 120     | a medigan model's own code in its worker                      |
| MEDGAN_MEDIGAN_STARTUP_S    | 120     | a medigan worker's imports                                    |
| MEDGAN_MEDIGAN_REFRESH_S    | 86400   | age after which medigan's catalogue is downloaded again (when online) |
| MEDGAN_MEDIGAN_REFRESH_TIMEOUT_S | 3  | seconds that download may take                                |

Two settings are not numbers: MEDGAN_TRUSTED_PROXIES (`trusted_proxies`: the proxies whose X-Forwarded-For
names the client) and MEDGAN_PERF_DETAILS (`perf_details`: host details and per-call history on the
Performance tab). Both are checked at start-up by `summary()` as well.

Every numeric MEDGAN_* variable is read through `env_number`: ASCII digits only, within its bounds. A bad
value stops start-up (`summary()` reads them all) with a ConfigError naming the variable, rather than
running unbounded or silently on a default.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
import threading
from typing import Any, Callable, TypeVar

from .errors import ConfigError, GenerationError

T = TypeVar("T")


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def env_number(name: str, default: float, *, minimum: float = 0, maximum: float | None = None,
               integer: bool = True) -> Any:
    """An int (or float) from the environment, in [minimum, maximum]; unset or blank: `default`.

    The one parser of every numeric MEDGAN_* variable. Only ASCII decimal notation is accepted (no "٣", no
    "1_000", no "nan"/"inf"); anything else raises a ConfigError that names the variable and the bounds.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default) if integer else float(default)
    kind = "an integer" if integer else "a number"
    bounds = f">= {minimum:g}" if maximum is None else f"between {minimum:g} and {maximum:g}"
    shown = repr(raw[:40])
    if len(raw) > 40 or not (_INTEGER if integer else _NUMBER).fullmatch(raw):
        raise ConfigError(f"{name} must be {kind} {bounds}, got {shown}")
    value = int(raw) if integer else float(raw)
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name} must be {kind} {bounds}, got {shown}")
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


def cache_max_bytes() -> int:
    """Size bound of the app's file caches (downloads and Gradio's cache), from MEDGAN_CACHE_MAX_MB (MiB)."""
    return int(env_number("MEDGAN_CACHE_MAX_MB", 512, minimum=1, integer=False) * (1 << 20))


def max_count_per_call() -> int:
    """Largest batch one `Generator.generate()` call accepts (the Python API; the app has MEDGAN_MAX_COUNT)."""
    return env_number("MEDGAN_MAX_COUNT_PER_CALL", 4096, minimum=1)


def max_loaded_models() -> int:
    return env_number("MEDGAN_MAX_LOADED_MODELS", 8, minimum=1)


def max_params() -> int:
    return env_number("MEDGAN_MAX_PARAMS", 100_000_000, minimum=1)


MAX_UPLOAD_MB_LIMIT = 1024


def max_upload_bytes() -> int:
    """Gradio's `max_file_size` (bytes) for its upload route, from MEDGAN_MAX_UPLOAD_MB (MiB). The app has no
    upload widget, so by default (0) the route is closed (medgan.serving answers it 404); above 0 it accepts
    files up to this size into Gradio's cache, which MEDGAN_CACHE_MAX_MB bounds."""
    mb = env_number("MEDGAN_MAX_UPLOAD_MB", 0, minimum=0, maximum=MAX_UPLOAD_MB_LIMIT, integer=False)
    return int(mb * 2**20)


def max_body_bytes() -> int:
    """Largest request body other than an upload (bytes), from MEDGAN_MAX_BODY_KB (KiB, default 64): a
    /generate call is a few hundred bytes, the page's largest event (a Models-table click) a few KiB."""
    return int(env_number("MEDGAN_MAX_BODY_KB", 64, minimum=1, maximum=1 << 20, integer=False) * 1024)


def max_text_chars() -> int:
    """Longest string accepted anywhere in a request (JSON body or query string), MEDGAN_MAX_TEXT_CHARS."""
    return env_number("MEDGAN_MAX_TEXT_CHARS", 512, minimum=1)


def max_per_client() -> int:
    """Events one client may have queued or running in Gradio's queue at once (MEDGAN_MAX_PER_CLIENT)."""
    return env_number("MEDGAN_MAX_PER_CLIENT", 4, minimum=1)


def max_sessions() -> int:
    """Sessions whose state Gradio keeps in memory (`launch(state_session_capacity=…)`), MEDGAN_MAX_SESSIONS:
    every API call without a session of its own opens one, ~0.15 MiB each (Gradio copies the page's
    configuration into it), so Gradio's default of 10,000 lets memory grow by ~1.5 GB."""
    return env_number("MEDGAN_MAX_SESSIONS", 256, minimum=1)


FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def env_flag(name: str, default: bool) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (any case); unset or blank: `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in FLAGS:
        raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw[:40]!r}")
    return FLAGS[raw.lower()]


def on_space() -> bool:
    """Running on a Hugging Face Space (SPACE_ID is set there)."""
    return bool(os.environ.get("SPACE_ID"))


def perf_details() -> bool:
    """MEDGAN_PERF_DETAILS: the Performance tab shows host details (memory, uptime, CPU name, threads, models in
    memory) and every caller's recent calls. Default on locally, off on a Space (SPACE_ID set)."""
    return env_flag("MEDGAN_PERF_DETAILS", not on_space())


# A Space's container is reached only through Hugging Face's proxies, from private addresses (an assumption
# about Spaces' network, not measured here): trusted there unless MEDGAN_TRUSTED_PROXIES says otherwise.
SPACE_PROXIES = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,::1/128"


def trusted_proxies() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """MEDGAN_TRUSTED_PROXIES: comma-separated addresses or networks (`127.0.0.1`, `10.0.0.0/8`) of reverse
    proxies whose X-Forwarded-For header names the client; "none" trusts none. Default: none, or on a Space
    SPACE_PROXIES."""
    raw = os.environ.get("MEDGAN_TRUSTED_PROXIES", "").strip() or (SPACE_PROXIES if on_space() else "none")
    if raw.lower() == "none":
        return ()
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"MEDGAN_TRUSTED_PROXIES must be comma-separated IP addresses or networks (or none), "
                          f"got {raw[:80]!r}") from None


def gpu_duration_s() -> int:
    return env_number("MEDGAN_GPU_DURATION_S", 60, minimum=1)


def medigan_timeout_s() -> float:
    return env_number("MEDGAN_MEDIGAN_TIMEOUT_S", 120, minimum=1, integer=False)


def medigan_startup_s() -> float:
    return env_number("MEDGAN_MEDIGAN_STARTUP_S", 120, minimum=1, integer=False)


def medigan_refresh_s() -> float:
    return env_number("MEDGAN_MEDIGAN_REFRESH_S", 86400, minimum=0, integer=False)


def medigan_refresh_timeout_s() -> float:
    return env_number("MEDGAN_MEDIGAN_REFRESH_TIMEOUT_S", 3.0, minimum=0.1, integer=False)


def max_frames() -> int:
    return env_number("MEDGAN_MAX_FRAMES", 64, minimum=2)


def max_grid() -> int:
    return env_number("MEDGAN_MAX_GRID", 8, minimum=1)


def summary() -> dict[str, Any]:
    """Every limit in effect (for logs, README checks and tests). Reads every numeric MEDGAN_* variable, so
    calling it at start-up refuses a malformed one there rather than at the first request that needs it."""
    return {"max_count": max_count(), "concurrency": concurrency(), "queue_size": queue_size(),
            "request_timeout_s": request_timeout_s(), "export_retention_s": export_retention_s(),
            "max_loaded_models": max_loaded_models(), "max_params": max_params(),
            "gradio_cache": gradio_cache(), "max_count_per_call": max_count_per_call(),
            "max_upload_bytes": max_upload_bytes(), "gpu_duration_s": gpu_duration_s(),
            "medigan_timeout_s": medigan_timeout_s(), "medigan_startup_s": medigan_startup_s(),
            "medigan_refresh_s": medigan_refresh_s(), "medigan_refresh_timeout_s": medigan_refresh_timeout_s(),
            "max_frames": max_frames(), "max_grid": max_grid(), "cache_max_bytes": cache_max_bytes(),
            "max_body_bytes": max_body_bytes(), "max_text_chars": max_text_chars(),
            "max_per_client": max_per_client(), "max_sessions": max_sessions(),
            "perf_details": perf_details(), "trusted_proxies": [str(n) for n in trusted_proxies()]}


# Every numeric variable summary() reads, for tests and docs.
VARIABLES = ("MEDGAN_MAX_COUNT", "MEDGAN_CONCURRENCY", "MEDGAN_QUEUE_SIZE", "MEDGAN_REQUEST_TIMEOUT_S",
             "MEDGAN_EXPORT_RETENTION_S", "MEDGAN_MAX_LOADED_MODELS", "MEDGAN_MAX_PARAMS", "MEDGAN_CACHE_CLEAN_S",
             "MEDGAN_CACHE_MAX_AGE_S", "MEDGAN_MAX_COUNT_PER_CALL", "MEDGAN_MAX_UPLOAD_MB", "MEDGAN_GPU_DURATION_S",
             "MEDGAN_MEDIGAN_TIMEOUT_S", "MEDGAN_MEDIGAN_STARTUP_S", "MEDGAN_MEDIGAN_REFRESH_S",
             "MEDGAN_MEDIGAN_REFRESH_TIMEOUT_S", "MEDGAN_MAX_FRAMES", "MEDGAN_MAX_GRID",
             "MEDGAN_CACHE_MAX_MB", "MEDGAN_MAX_BODY_KB", "MEDGAN_MAX_TEXT_CHARS", "MEDGAN_MAX_PER_CLIENT",
             "MEDGAN_MAX_SESSIONS")


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
