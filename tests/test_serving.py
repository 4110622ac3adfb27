"""Serving limits through a real app (python app.py on 127.0.0.1): memory levels off under plain-HTTP /generate
calls, 20 MB bodies are refused before they are read and leave memory as it was, no route leaves a file behind,
and one client flooding /generate cannot lock another out. The full-size soak and its figures are in
`python -m benchmarks --sections soak`; the fairness latencies go to fairness.json in the artifacts folder."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from helpers import make_model_folder, running_app
from medgan.testing import call_api, post_oversized, rss_slope_kib, tree_rss, under_flood

pytestmark = pytest.mark.slow

WARM_UP, SOAK, EVERY = 150, 300, 25
SOAK_BOUND_KIB_PER_CALL = 16  # a session per call kept for ever costs ~158 KiB here; the bounded app ~0-2


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One app for the module: few sessions kept (so memory levels off within the test), loopback trusted as a
    proxy (so two local clients can be told apart by X-Forwarded-For), its own temp folder."""
    root = tmp_path_factory.mktemp("serving")
    make_model_folder(root / "weights", "tiny-test")
    (root / "system-tmp").mkdir()
    env = {"MEDGAN_WEIGHTS_DIRS": str(root / "weights"), "MEDGAN_MEDIGAN": "0", "MEDGAN_MAX_SESSIONS": "16",
           "MEDGAN_TRUSTED_PROXIES": "127.0.0.1", "GRADIO_TEMP_DIR": str(root / "gradio"),
           "MEDGAN_EXPORT_DIR": str(root / "gradio" / "medgan-exports"), "TMPDIR": str(root / "system-tmp")}
    with running_app(env) as proc:
        proc.root = root
        yield proc


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".log")}


def test_memory_levels_off_under_plain_http_generate_calls(app):
    with httpx.Client(base_url=app.url, timeout=120) as http:
        assert [call_api(http, "generate", ["tiny-test", i, 1, 1, "any"]) for i in range(3)] == [(200, "complete")] * 3
        for i in range(WARM_UP):
            call_api(http, "generate", ["tiny-test", i, 1, 1, "any"])
        samples = []
        for i in range(SOAK + 1):
            if i % EVERY == 0:
                samples.append((i, tree_rss(app.pid)))
            assert call_api(http, "generate", ["tiny-test", 1000 + i, 1, 1, "any"]) == (200, "complete")
    slope = rss_slope_kib(samples)
    growth = (samples[-1][1] - samples[0][1]) / 2**20
    print(f"soak: {SOAK} calls after {WARM_UP}: RSS {samples[0][1] / 2**20:.1f} -> {samples[-1][1] / 2**20:.1f} MiB, "
          f"slope {slope:.2f} KiB/call")
    assert slope < SOAK_BOUND_KIB_PER_CALL and growth < SOAK * SOAK_BOUND_KIB_PER_CALL / 1024, (slope, growth)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_20_mb_bodies_are_refused_before_they_are_read_and_memory_stays(app, chunked):
    before = tree_rss(app.pid)
    for _ in range(3):
        status, sent = post_oversized(app.url, "/gradio_api/call/generate", 20 << 20, chunked)
        assert status == 413 and sent < 4 << 20, (status, sent)  # answered long before 20 MB went out
    assert (tree_rss(app.pid) - before) / 2**20 < 4
    log = app.log_path.read_text()
    what = "request body over 65536 bytes (MEDGAN_MAX_BODY_KB); refused unread" if chunked else \
        "request body of 20971520 bytes; at most 65536"
    assert f"refused POST /gradio_api/call/generate: HTTP 413: {what}" in log and "Traceback" not in log


def test_no_route_leaves_a_file_behind(app):
    """Every body-accepting route Gradio mounts (medgan.serving.ROUTES), sent a file: the unused ones are closed,
    and afterwards nothing new is on disk, in Gradio's cache or in the system temp folder."""
    before = files_under(app.root)
    upload = {"files": ("scan.bin", b"\1" * 100_000), "video": ("rec.mp4", b"\0" * 100_000)}
    closed = ["/gradio_api/upload", "/gradio_api/process_recording", "/gradio_api/component_server",
              "/gradio_api/stream/e1", "/gradio_api/stream/e1/close", "/gradio_api/vibe-edit",
              "/gradio_api/undo-vibe-edit", "/gradio_api/vibe-code", "/gradio_api/vibe-starter-queries",
              "/gradio_api/run-history/connect", "/gradio_api/profiling/clear"]
    for path in closed:
        answer = httpx.post(app.url + path, files=upload, timeout=30)
        assert answer.status_code == 404 and answer.json() == {"detail": f"{path} is not served by this app"}, path
    for path in ("/login", "/gradio_api/cancel", "/gradio_api/reset", "/gradio_api/queue/join",
                 "/gradio_api/call/generate", "/gradio_api/run/predict"):
        answer = httpx.post(app.url + path, files=upload, timeout=30)
        assert answer.status_code in (400, 404, 405, 413, 422), (path, answer.status_code, answer.text[:200])
    assert files_under(app.root) == before


def test_one_client_flooding_generate_does_not_lock_out_another(app, artifacts_dir):
    """Client A posts /generate as fast as it can for 8 s (raw HTTP, never reading results); meanwhile client B's
    /generate and /models calls through gradio_client all succeed. Both reach the app through 127.0.0.1,
    trusted as a proxy here, so their X-Forwarded-For addresses tell them apart."""
    b = Client(app.url, download_files=False, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})

    def generate() -> None:
        assert [r["caption"] for r in b.predict("tiny-test", 5, 4, api_name="/generate")] == \
            [f"SYNTHETIC · tiny-test · seed 5 · #{i}" for i in range(4)]

    def models() -> None:
        assert any(m["id"] == "tiny-test" for m in b.predict(api_name="/models"))

    run = under_flood(app.url, 8, {"generate": generate, "models": models}, {"X-Forwarded-For": "203.0.113.7"},
                      ["tiny-test", 1, 16, 1, "any"])
    (artifacts_dir / "fairness.json").write_text(json.dumps(run, indent=1) + "\n")
    print(f"fairness: {run}")
    assert run["flooder"].get(429, 0) > 0 and run["flooder"].get(200, 0) >= 4  # served, up to its bound
    assert "client 203.0.113.7 reached MEDGAN_MAX_PER_CLIENT=4" in app.log_path.read_text()
