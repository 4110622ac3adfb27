"""Through the app, with its default limits: memory under many plain-HTTP calls, 20 MB bodies, one client flooding.

- soak: >= 2,000 `/generate` calls (4 images of the 64² default model each) over plain HTTP, every one a
  session of its own in Gradio as from a script without gradio_client (the case that used to keep ~0.15 MiB
  per call); RSS of the app's process tree every 50 calls: the least-squares slope over the last half (KiB per
  call; ≈ 0 once memory has levelled off), the peak, and the start and end;
- bodies: 20 MB POSTs to /gradio_api/call/generate, declared (Content-Length) and chunked, 5 of each: the HTTP
  status, how much of the body was sent before the answer came, and RSS before and after;
- fairness: one client posts `/generate` (16 images) as fast as it can for 8 s, never reading a result, while a
  second one calls `/generate` (4 images) and `/models` through gradio_client in turn: their calls, p50 and
  max, and the flooder's HTTP statuses. Both come from 127.0.0.1, trusted as a proxy for this run
  (MEDGAN_TRUSTED_PROXIES), so their X-Forwarded-For addresses tell them apart.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from medgan.testing import (call_api, launched_app, post_oversized, rss_slope_kib, tree_rss, under_flood,
                            wait_for_port)

from .app_bench import app_env
from .models import BenchModel

BODY_MB, BODIES, EVERY = 20, 5, 50


def soak(url: str, pid: int, model_id: str, calls: int) -> dict[str, Any]:
    import httpx
    samples, failed, began = [], 0, time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(calls + 1):
            if i % EVERY == 0:
                samples.append((i, tree_rss(pid)))
            if i < calls:
                failed += call_api(http, "generate", [model_id, i, 4, 1, "any"]) != (200, "complete")
    half = [s for s in samples if s[0] >= calls // 2]
    mib = [round(r / 2**20, 1) for _, r in samples]
    return {"calls": calls, "failed": failed, "seconds": round(time.perf_counter() - began, 1),
            "rss_start_mb": mib[0], "rss_end_mb": mib[-1], "rss_peak_mb": max(mib),
            "slope_last_half_kib_per_call": round(rss_slope_kib(half), 3), "slope_all_kib_per_call": round(rss_slope_kib(samples), 3),
            "rss_mb_every_50_calls": mib}


def big_bodies(url: str, pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_before_mb": round(tree_rss(pid) / 2**20, 1)}
    for chunked in (False, True):
        runs = [post_oversized(url, "/gradio_api/call/generate", BODY_MB << 20, chunked) for _ in range(BODIES)]
        out["chunked" if chunked else "content_length"] = {
            "statuses": sorted({status for status, _ in runs}, key=str),
            "max_sent_kib": round(max(sent for _, sent in runs) / 1024, 1), "bodies": BODIES, "body_mb": BODY_MB}
    out["rss_after_mb"] = round(tree_rss(pid) / 2**20, 1)
    out["rss_change_mb"] = round(out["rss_after_mb"] - out["rss_before_mb"], 1)
    return out


def fairness(url: str, model_id: str, seconds: float) -> dict[str, Any]:
    from gradio_client import Client
    other = Client(url, download_files=False, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})
    calls = {"generate": lambda: other.predict(model_id, 5, 4, api_name="/generate"),
             "models": lambda: other.predict(api_name="/models")}
    run = under_flood(url, seconds, calls, {"X-Forwarded-For": "203.0.113.7"}, [model_id, 1, 16, 1, "any"])
    return {**run, "seconds": seconds}


def run_soak(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """The three measurements on one app started with its defaults (and loopback trusted as a proxy)."""
    calls, flood_s = (200, 3.0) if quick else (2000, 8.0)
    default = next((m for m in models if m.config.resolution == 64), models[0]).id
    with tempfile.TemporaryDirectory(prefix="medgan-bench-soak-") as tmp:
        env = {**app_env(models, Path(tmp)), "MEDGAN_TRUSTED_PROXIES": "127.0.0.1"}
        with launched_app(env, lifetime=3600) as proc:
            wait_for_port(proc, timeout=180)
            result = {"model": default, "soak": soak(proc.url, proc.pid, default, calls),
                      "bodies": big_bodies(proc.url, proc.pid), "fairness": fairness(proc.url, default, flood_s)}
            result["refusals_logged"] = Path(proc.log_path).read_text().count("HTTP 413")
    return result
