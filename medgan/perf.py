"""Performance numbers for the app's Performance tab and its `/stats` API, the start-up warm-up, and the CPU's
name (also used by training run records and benchmarks).

`public_stats(model_id)` is what `/stats` answers to anyone: aggregates only, for a listed model (an unknown id
is refused with UnknownModelError; none: the server's device and version alone). It never loads a model:

    model            the id asked about (null if none)
    loaded           whether it is in the registry's LRU now
    load_seconds     how long its last load took (null if never loaded in this process)
    recent_calls     generate() calls of the model kept for these numbers (the last 100 at most)
    recent_images    images those calls made
    p50_seconds, p95_seconds   model time per call over them: latents + forward + uint8 (no web/PNG overhead)
    images_per_s     recent_images / their total model time
    device, precision, version

`model_stats(model_id)` adds what only the local Performance tab shows, with MEDGAN_PERF_DETAILS
(medgan.limits.perf_details: off on a Space): every recent call (`history`: [{"time", "count", "seconds"}]), the
last one (`last_seconds`, `last_count`), and the host (`device_name`: the CPU or GPU model, `threads`, `rss_mb`,
`loaded_models`, `max_loaded`, `uptime_s`, `optimized`).
"""
from __future__ import annotations

import functools
import logging
import os
import platform
import threading
import time
from typing import Any

import numpy as np
import torch

from . import __version__
from .errors import InvalidArgumentError, UnknownModelError
from .registry import Registry, get_registry
from .validation import check_model_id

log = logging.getLogger(__name__)
STARTED = time.time()


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc or psutil; 0 if unknown."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return 0


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (`Intel(R) Xeon(R) …`), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=8)
def device_name(device: str = "cpu") -> str:
    """`Intel(R) Xeon(R) … (N cores)` for the CPU, the GPU's marketing name for cuda devices."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def loaded_generator(registry: Registry, model_id: str) -> Any | None:
    """The cached generator for `model_id`, or None: describing a model must never load it."""
    with registry._lock:  # same package; the registry has no public non-loading accessor
        cached = registry._loaded.get(model_id)
    return cached[1] if cached else None


PUBLIC_FIELDS = ("model", "loaded", "load_seconds", "recent_calls", "recent_images", "p50_seconds", "p95_seconds",
                 "images_per_s", "device", "precision", "version")


def listed(model_id: object, registry: Registry | None = None) -> str | None:
    """`model_id` when the registry lists it, else None (never raises: for panels that must not echo input)."""
    try:
        return (registry or get_registry()).info(check_model_id(model_id)).id
    except (InvalidArgumentError, UnknownModelError):
        return None


def public_stats(model_id: object = None, registry: Registry | None = None) -> dict[str, Any]:
    """Aggregates of a listed model (PUBLIC_FIELDS); an unknown id raises UnknownModelError, a malformed one
    InvalidArgumentError, like every other endpoint. None or blank: the server's device and version only."""
    registry = registry or get_registry()
    blank = model_id is None or (isinstance(model_id, str) and not model_id.strip())
    stats = model_stats(None if blank else registry.info(check_model_id(model_id)).id, registry)
    history = stats["history"]
    seconds = sum(h["seconds"] for h in history)
    images = sum(h["count"] for h in history)
    stats.update(recent_calls=len(history), recent_images=images,
                 images_per_s=round(images / seconds, 1) if seconds > 0 else None)
    return {key: stats[key] for key in PUBLIC_FIELDS}


def model_stats(model_id: str | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Everything known of `model_id` (used as given: validate it first) and of the host; see the module
    docstring. Only the local Performance tab shows all of it."""
    registry = registry or get_registry()
    model_id = model_id.strip() if isinstance(model_id, str) and model_id.strip() else None
    gen = loaded_generator(registry, model_id) if model_id else None
    stats = getattr(gen, "stats", None)
    history = [{"time": round(t, 3), "count": n, "seconds": round(s, 6)} for t, n, s in
               (stats.history if stats else [])]
    seconds = [h["seconds"] for h in history]
    last = history[-1] if history else None
    device = str(getattr(gen, "device", "cuda" if torch.cuda.is_available() else "cpu"))
    return {
        "model": model_id,
        "loaded": gen is not None,
        "load_seconds": round(registry.load_seconds[model_id], 4) if model_id in registry.load_seconds else None,
        "last_seconds": last["seconds"] if last else None,
        "last_count": last["count"] if last else None,
        "images_per_s": round(last["count"] / last["seconds"], 1) if last and last["seconds"] > 0 else None,
        "p50_seconds": round(float(np.percentile(seconds, 50)), 6) if seconds else None,
        "p95_seconds": round(float(np.percentile(seconds, 95)), 6) if seconds else None,
        "history": history,
        "device": device,
        "device_name": device_name(device),
        "precision": getattr(gen, "precision", None),
        "optimized": getattr(gen, "optimized", None),
        "threads": torch.get_num_threads(),
        "rss_mb": round(rss_bytes() / 2**20, 1),
        "loaded_models": registry.loaded_ids(),
        "max_loaded": registry.max_loaded,
        "uptime_s": round(time.time() - STARTED, 1),
        "version": __version__,
    }


def warm_up(model_id: str | None, registry: Registry | None = None) -> float | None:
    """Load `model_id` and generate one image, so the first user request finds it loaded and its kernels
    initialised. Returns the seconds it took, or None if it failed (logged; the app still serves)."""
    if not model_id:
        return None
    began = time.perf_counter()
    try:
        (registry or get_registry()).load(model_id).generate(1, 0, output_type="np")
    except Exception as exc:  # a broken default model must not stop the app
        log.warning("warm-up of %s failed: %s", model_id, exc)
        return None
    return time.perf_counter() - began


def warm_up_in_background(model_id: str | None, registry: Registry | None = None) -> threading.Thread:
    thread = threading.Thread(target=warm_up, args=(model_id, registry), name="medgan-warm-up", daemon=True)
    thread.start()
    return thread


def panel_markdown(stats: dict[str, Any], session: list[dict[str, Any]] | None = None, details: bool = True) -> str:
    """The Performance tab's table: this browser session's last call, the model's aggregates, the device; with
    `details` (MEDGAN_PERF_DETAILS) also the model's last call by anyone and the host (memory, CPU, uptime)."""
    def ms(s: float | None) -> str:
        return f"{s * 1e3:.1f} ms" if isinstance(s, (int, float)) else "—"
    rows = [("Model", f"`{stats['model']}` ({'loaded' if stats['loaded'] else 'not loaded yet'})"
             if stats["model"] else "—")]
    if session:
        last = session[-1]
        rows.append(("Your last generation", f"{ms(last['seconds'])} for {last['count']} images · "
                     f"{last['count'] / last['seconds']:.0f} images/s" if last["seconds"] > 0 else "—"))
    if details and stats["last_seconds"] is not None:
        rows.append(("Model's last generation (any session)", f"{ms(stats['last_seconds'])} for "
                     f"{stats['last_count']} images · {stats['images_per_s']:.0f} images/s"))
    if stats["history"]:
        rows.append((f"Model time p50 / p95 (last {len(stats['history'])} calls)",
                     f"{ms(stats['p50_seconds'])} / {ms(stats['p95_seconds'])}"))
    rows.append(("Model load time", f"{stats['load_seconds']:.2f} s" if stats["load_seconds"] is not None else "—"))
    if details:
        rows += [("Process memory (RSS)", f"{stats['rss_mb']:.0f} MiB"),
                 ("Device", f"{stats['device']} · {stats['device_name']} · {stats['precision'] or 'fp32'} · "
                            f"{stats['threads']} torch threads"),
                 ("Models in memory", f"{len(stats['loaded_models'])} of at most {stats['max_loaded']}"),
                 ("Uptime", f"{stats['uptime_s']:.0f} s")]
    else:
        rows.append(("Device", f"{stats['device']} · {stats['precision'] or 'fp32'}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return ("Model time = latents + forward pass + uint8 conversion; the web layer (PNG encoding, transfer) "
            "comes on top.\n\n| | |\n|---|---|\n" + table)
