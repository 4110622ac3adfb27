"""Load: 16 concurrent gradio_client clients x 10 /generate requests against a real app on 127.0.0.1.

Expect no errors, every count right, bounded time, and the server's memory bounded. The figures (latency
percentiles, throughput, RSS) go to load.json in the artifacts folder (tests/conftest.py `artifacts_dir`:
`.pytest_cache/d/artifacts/` by default) and stdout (seen with `pytest -s`).
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from gradio_client import Client

from helpers import make_model_folder, running_app
from medgan.testing import tree_rss

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS = 16, 10
RSS_LIMIT_MB = 1500


def server_rss_mb(proc) -> float:
    """RSS of the app: `running_app` starts `timeout python app.py`, so sum the process tree."""
    return tree_rss(proc.pid) / 2**20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_concurrent_clients(tmp_path, artifacts_dir):
    weights = tmp_path / "w"
    make_model_folder(weights, "tiny-test")
    # 16 users on one machine: the loopback address is trusted as a proxy, so that each client's own
    # X-Forwarded-For address is its identity for MEDGAN_MAX_PER_CLIENT, as behind a Space's proxy
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights), "MEDGAN_TRUSTED_PROXIES": "127.0.0.1"}) as app:
        Client(app.url, download_files=False, verbose=False).predict("tiny-test", 0, 1, api_name="/generate")
        rss_start = server_rss_mb(app)
        peak = [rss_start]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                peak[0] = max(peak[0], server_rss_mb(app))

        def client_run(k: int) -> list[tuple[float, str | None]]:
            client = Client(app.url, download_files=False, verbose=False,
                            headers={"X-Forwarded-For": f"198.51.100.{k + 1}"})
            out = []
            for i in range(REQUESTS):
                seed, count = 1000 * k + i, (k + i) % 16 + 1
                began = time.perf_counter()
                try:
                    result = client.predict("tiny-test", seed, count, api_name="/generate")
                    want = [f"SYNTHETIC · tiny-test · seed {seed} · #{j}" for j in range(count)]
                    got = [r["caption"] for r in result]
                    error = None if got == want else f"wrong result for count {count}: {len(got)} images"
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    error = f"{type(exc).__name__}: {exc}"
                out.append((time.perf_counter() - began, error))
            return out

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(client_run, k) for k in range(CLIENTS)]
            results = [r for f in futures for r in f.result(timeout=240)]
        wall = time.perf_counter() - began
        stop.set()
        sampler.join()
        rss_end = server_rss_mb(app)
        alive = app.poll() is None

    latencies = [t for t, _ in results]
    errors = [e for _, e in results if e]
    figures = {"clients": CLIENTS, "requests": len(results), "errors": len(errors),
               "wall_s": round(wall, 2), "throughput_rps": round(len(results) / wall, 1),
               "latency_p50_ms": round(1000 * statistics.median(latencies)),
               "latency_p95_ms": round(1000 * percentile(latencies, 0.95)),
               "latency_max_ms": round(1000 * max(latencies)),
               "rss_start_mb": round(rss_start), "rss_peak_mb": round(peak[0]), "rss_end_mb": round(rss_end),
               "rss_limit_mb": RSS_LIMIT_MB, "cpu_count": psutil.cpu_count()}
    (artifacts_dir / "load.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\nload test:", json.dumps(figures))
    assert not errors, errors[:5]
    assert len(results) == CLIENTS * REQUESTS and alive
    assert 0 < figures["rss_peak_mb"] < RSS_LIMIT_MB, figures
