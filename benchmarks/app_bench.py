"""Through the app: cold start, memory, and /generate latency over HTTP with gradio_client.

- cold start: from spawning `python app.py` to the port opening, and to the first /generate answer
  (16 images of the default model, counted from the spawn; includes creating the Client);
- RSS of the app process at the port, after the first answer, and after every local model was used once;
- /generate of 16 images, >= 50 calls each way, alternating: the server's answer (`download_files=False`:
  file references, no image transfer) and the full round trip (every PNG downloaded);
- model time from the app's own /stats (latents + forward + uint8), so framework overhead = answer - model.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from medgan.testing import launched_app, tree_rss, wait_for_port

from .harness import percentile
from .models import BenchModel

COUNT = 16


def app_env(models: list[BenchModel], tmp: Path) -> dict[str, str]:
    """What the benchmarked app gets on top of this process's environment (medgan.testing.launched_app)."""
    env = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "GRADIO_TEMP_DIR": str(tmp / "gradio"), "MEDGAN_EXPORT_DIR": str(tmp / "exports")}
    extra = sorted({str(m.folder.parent) for m in models if not m.shipped})
    if extra:
        env["MEDGAN_WEIGHTS_DIRS"] = os.pathsep.join(extra)
    return env


def app_cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU seconds of the app so far: close to the wall time a quiet machine would show for
    the single-threaded start-up, whatever else runs here."""
    import psutil
    total = 0.0
    for child in psutil.Process(proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            total += t.user + t.system
    return total


def app_rss(proc: subprocess.Popen) -> int:
    """RSS of the app's process tree (`timeout`, python app.py and any children it started), bytes."""
    return tree_rss(proc.pid)


def client(url: str, downloads: Path | None = None):
    from gradio_client import Client
    return Client(url, download_files=str(downloads) if downloads else False, verbose=False)


def fast_route_images(route, model_id: str, seed: int):
    """The images of one GET of the app's queue-free route (raises on an error answer)."""
    import io
    import numpy as np
    answer = route.get("/medgan/v1/generate.npz", params={"model": model_id, "seed": seed, "count": COUNT})
    answer.raise_for_status()
    with np.load(io.BytesIO(answer.content), allow_pickle=False) as z:
        return z["images"]


def run_app(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """Cold start (1 start in quick mode, else 3) and, on the last start, /generate latency over HTTP."""
    starts, calls = (1, 5) if quick else (3, 50)
    default = next((m for m in models if m.config.resolution == 64), models[0]).id
    runs, latency = [], {}
    with tempfile.TemporaryDirectory(prefix="medgan-bench-app-") as tmp:
        env = app_env(models, Path(tmp))
        for start in range(starts):
            with launched_app(env, lifetime=900) as proc:
                url, spawned = proc.url, proc.spawned
                wait_for_port(proc, timeout=120, poll=0.02)  # fine-grained: the time to the port is measured
                port_s = time.perf_counter() - spawned
                rss_port, cpu_port = app_rss(proc), app_cpu_seconds(proc)
                answer = client(url)
                answer.predict(default, 0, COUNT, api_name="/generate")
                first_s = time.perf_counter() - spawned
                rss_first, cpu_first = app_rss(proc), app_cpu_seconds(proc)
                local = [m["id"] for m in answer.predict(api_name="/models")
                         if m["source"] == "local" and m["generatable"]]
                for model_id in local:
                    answer.predict(model_id, 0, 1, api_name="/generate")
                runs.append({"to_port_s": round(port_s, 3), "to_first_answer_s": round(first_s, 3),
                             "app_cpu_s_to_port": round(cpu_port, 2), "app_cpu_s_to_first_answer": round(cpu_first, 2),
                             "rss_at_port_mb": round(rss_port / 2**20, 1),
                             "rss_after_first_answer_mb": round(rss_first / 2**20, 1),
                             "rss_all_models_loaded_mb": round(app_rss(proc) / 2**20, 1),
                             "local_models_loaded": len(local)})
                if start == starts - 1:
                    latency = measure_latency(answer, client(url, Path(tmp) / "downloads"), default, calls, proc)
    first = sorted(r["to_first_answer_s"] for r in runs)
    cold = {"model": default, "count": COUNT, "runs": runs, "median_to_first_answer_s": first[len(first) // 2],
            "median_to_port_s": sorted(r["to_port_s"] for r in runs)[len(runs) // 2],
            "max_rss_all_models_loaded_mb": max(r["rss_all_models_loaded_mb"] for r in runs)}
    return {"cold_start": cold, "app": latency}


def measure_latency(answer, full, model_id: str, calls: int, proc: subprocess.Popen | None = None) -> dict[str, Any]:
    """/generate of 16 images: server's answer vs full round trip (alternating), and the model's share.
    Also the CPU time per call of the app (psutil, read between calls) and of the client (this process),
    which a busy machine inflates far less than wall time."""
    full.predict(model_id, 0, COUNT, api_name="/generate")  # warm the downloading client too
    import httpx
    route = httpx.Client(base_url=answer.src.rstrip("/"), timeout=120)
    ways = {"answer": lambda seed: answer.predict(model_id, seed, COUNT, api_name="/generate"),
            "round_trip": lambda seed: full.predict(model_id, seed, COUNT, api_name="/generate"),
            # the queue-free route (app.FAST_ROUTE): the same images as one .npz, no queue, SSE or PNGs
            "fast_route": lambda seed: fast_route_images(route, model_id, seed)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    client_cpu: dict[str, list[float]] = {name: [] for name in ways}
    ways["fast_route"](0)
    for i in range(calls):
        order = list(ways) if i % 2 == 0 else list(ways)[::-1]
        for name in order:
            cpu_before = app_cpu_seconds(proc) if proc else 0.0
            began, cpu_began = time.perf_counter(), time.process_time()
            result = ways[name](1000 + i)
            times[name].append(time.perf_counter() - began)
            client_cpu[name].append(time.process_time() - cpu_began)
            cpu[name].append(app_cpu_seconds(proc) - cpu_before if proc else 0.0)
            assert len(result) == COUNT, f"{name} returned {len(result)} images, expected {COUNT}"
    route.close()
    stats = answer.predict(model_id, api_name="/stats")  # aggregates over the model's recent calls (<= 100)
    out: dict[str, Any] = {"model": model_id, "count": COUNT, "calls_each": calls}
    for name, values in times.items():
        out[name] = {"p50_ms": round(percentile(values, 50) * 1e3, 2), "p95_ms": round(percentile(values, 95) * 1e3, 2),
                     "mean_ms": round(sum(values) / len(values) * 1e3, 2),
                     "app_cpu_ms_p50": round(percentile(cpu[name], 50) * 1e3, 1),
                     "client_cpu_ms_p50": round(percentile(client_cpu[name], 50) * 1e3, 1)}
    out["model_time"] = {"p50_ms": round(stats["p50_seconds"] * 1e3, 2), "p95_ms": round(stats["p95_seconds"] * 1e3, 2),
                         "samples": stats["recent_calls"]}
    out["framework_overhead_p50_ms"] = round(out["answer"]["p50_ms"] - out["model_time"]["p50_ms"], 2)
    out["download_overhead_p50_ms"] = round(out["round_trip"]["p50_ms"] - out["answer"]["p50_ms"], 2)
    out["fast_route_overhead_p50_ms"] = round(out["fast_route"]["p50_ms"] - out["model_time"]["p50_ms"], 2)
    out["stats_fields"] = sorted(stats)
    return out
