"""Performance numbers: medgan.perf unit behaviour, and the app's /stats API + warm-up through a real server.
/stats answers anyone with aggregates only and refuses unknown or oversized ids; per-call history and host
details stay on the Performance tab, behind MEDGAN_PERF_DETAILS. Private endpoints answer by fn_index only."""
import time

import httpx
import pytest
from gradio_client import Client

from helpers import make_model_folder, running_app
from medgan import perf, service
from medgan.errors import InvalidArgumentError, UnknownModelError
from medgan.registry import DEFAULT_WEIGHTS_DIR, Registry, default_sources
from medgan.sources.local import LocalSource

FIELDS = {"model", "loaded", "load_seconds", "last_seconds", "last_count", "images_per_s", "p50_seconds",
          "p95_seconds", "history", "device", "device_name", "precision", "optimized", "threads", "rss_mb",
          "loaded_models", "max_loaded", "uptime_s", "version"}


def test_model_stats_never_loads_and_reports_calls(tmp_path):
    make_model_folder(tmp_path, "tiny-a")
    registry = Registry(default_sources([tmp_path]))
    before = perf.model_stats("tiny-a", registry)
    assert set(before) == FIELDS
    assert before["loaded"] is False and before["last_seconds"] is None and before["history"] == []
    assert registry.loaded_ids() == []  # describing a model did not load it
    gen = registry.load("tiny-a")
    gen.generate(5, 0, output_type="np")
    gen.generate(3, 1, output_type="np")
    after = perf.model_stats("tiny-a", registry)
    assert after["loaded"] and after["load_seconds"] > 0 and after["loaded_models"] == ["tiny-a"]
    assert after["last_count"] == 3 and after["last_seconds"] > 0
    assert after["images_per_s"] == round(3 / after["last_seconds"], 1)
    assert [h["count"] for h in after["history"]] == [5, 3]
    assert after["p50_seconds"] <= after["p95_seconds"] and after["rss_mb"] > 50
    assert after["device"] == "cpu" and after["device_name"] and after["precision"] == "fp32" and after["optimized"]
    text = perf.panel_markdown(after, [after["history"][-1]])
    assert "Your last generation" in text and "for 3 images" in text and "MiB" in text
    assert perf.model_stats(None, registry)["model"] is None
    public = perf.panel_markdown(after, [after["history"][-1]], details=False)  # a Space: no host details
    assert "Your last generation" in public and "p50 / p95 (last 2 calls)" in public and "| Device | cpu · fp32 |" in public
    for detail in ("MiB", "Uptime", "torch threads", perf.cpu_name(), "any session", "Models in memory"):
        assert detail not in public, detail


def test_public_stats_are_aggregates_of_a_listed_model(tmp_path):
    make_model_folder(tmp_path, "tiny-a")
    registry = Registry(default_sources([tmp_path]))
    gen = registry.load("tiny-a")
    gen.generate(5, 0, output_type="np")
    gen.generate(3, 1, output_type="np")
    stats = perf.public_stats("tiny-a", registry)
    assert tuple(stats) == perf.PUBLIC_FIELDS and stats["recent_calls"] == 2 and stats["recent_images"] == 8
    seconds = sum(h[2] for h in gen.stats.history)
    assert stats["images_per_s"] == pytest.approx(8 / seconds, rel=1e-3) and 0 < stats["p50_seconds"] <= stats["p95_seconds"]
    assert perf.public_stats(None, registry)["model"] is None and perf.public_stats(" ", registry)["loaded"] is False
    with pytest.raises(UnknownModelError, match="^Unknown model id 'no-such'"):
        perf.public_stats("no-such", registry)
    with pytest.raises(InvalidArgumentError, match=r"^model id is too long \(20000 characters; at most 512\)$"):
        perf.public_stats("x" * 20000, registry)
    assert perf.listed("tiny-a", registry) == "tiny-a" and perf.listed("x" * 20000, registry) is None


def test_warm_up_loads_only_the_given_model_and_survives_a_broken_one(tmp_path):
    make_model_folder(tmp_path, "tiny-a")
    make_model_folder(tmp_path, "tiny-b")
    registry = Registry(default_sources([tmp_path]))
    assert perf.warm_up("tiny-b", registry) > 0
    assert registry.loaded_ids() == ["tiny-b"]
    (tmp_path / "tiny-a" / "model.safetensors").write_bytes(b"broken")
    assert perf.warm_up("tiny-a", registry) is None
    assert perf.warm_up(None, registry) is None


def endpoint_index(url: str, name: str) -> int:
    """The fn_index of event handler `name` in the page's configuration (how the page itself calls it)."""
    config = httpx.get(url + "/config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == name)


@pytest.mark.slow
def test_stats_api_and_start_up_warm_up_through_the_app(tmp_path):
    weights = tmp_path / "weights"
    make_model_folder(weights, "aaa-default", resolution=64, base_width=8)
    make_model_folder(weights, "zzz-other")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights), "MEDGAN_MEDIGAN": "0"}) as app:
        client = Client(app.url, download_files=False, verbose=False)
        local = [m["id"] for m in client.predict(api_name="/models") if m["source"] == "local"]
        default = client.predict(api_name="/stats")["model"]  # optional input: the dropdown's default
        assert default == service.default_model(Registry([LocalSource([weights, DEFAULT_WEIGHTS_DIR])]))
        # The default model is loaded in the background at start-up, without any request; the others are not.
        deadline = time.time() + 60
        while not (s := client.predict(default, api_name="/stats"))["recent_calls"] and time.time() < deadline:
            time.sleep(0.2)
        assert tuple(s) == perf.PUBLIC_FIELDS and s["loaded"] and s["recent_calls"] == 1  # the warm-up call
        other = next(m for m in local if m != default)
        assert client.predict(other, api_name="/stats")["loaded"] is False
        client.predict(default, 5, 4, api_name="/generate")
        s = client.predict(default, api_name="/stats")
        assert s["model"] == default and s["recent_images"] == 5 and s["p50_seconds"] > 0 and s["images_per_s"] > 0
        assert s["load_seconds"] > 0 and s["device"] == "cpu"
        with pytest.raises(Exception, match="Unknown model id 'no-such-model'"):
            client.predict("no-such-model", api_name="/stats")
        # an oversized id: refused at the edge, in a few words, whatever its size
        for size in (5_000, 20 << 20):
            answer = httpx.post(f"{app.url}/gradio_api/call/stats", json={"data": ["x" * size]}, timeout=60)
            assert answer.status_code in (400, 413) and len(answer.text) < 200, answer.text[:300]

        # private endpoints: by fn_index (as the page calls them), not by name; a wrong input count is refused
        # at the edge, with one log line and no Gradio traceback
        index = endpoint_index(app.url, "model_details")
        body = {"data": [default], "fn_index": index, "session_hash": "s1"}
        answer = httpx.post(f"{app.url}/gradio_api/run/predict", json=body, timeout=60)
        assert answer.status_code == 200 and default in answer.json()["data"][0]
        assert httpx.post(f"{app.url}/gradio_api/run/model_details", json={"data": [default]}).status_code == 404
        unknown = httpx.post(f"{app.url}/gradio_api/run/predict", json={**body, "data": ["x" * 400]}, timeout=60)
        assert unknown.status_code == 200 and unknown.json()["data"] == [""]  # nothing echoed
        size = app.log_path.stat().st_size
        wrong = httpx.post(f"{app.url}/gradio_api/queue/join", timeout=60,
                           json={"data": [default, 1], "fn_index": endpoint_index(app.url, "generate"),
                                 "session_hash": "s1"})
        assert wrong.status_code == 400 and wrong.json() == {"detail": "generate takes 5 inputs, got 2"}
        keywords = httpx.post(f"{app.url}/gradio_api/call/v2/generate", json={"model": default, "bogus": 1})
        assert keywords.status_code == 400 and "generate has no parameter 'bogus'; its parameters: model, seed, " \
            "count, truncation, label" in keywords.text  # the real names: Gradio's API page shows them too
        assert httpx.post(f"{app.url}/gradio_api/call/v2/generate", json={"model": default, "seed": 3}).status_code == 200
        logged = app.log_path.read_text()[size:]  # the edge logs before it answers
        assert "generate takes 5 inputs, got 2" in logged and "Traceback" not in logged
        panel = endpoint_index(app.url, "performance_panel")
        answer = httpx.post(f"{app.url}/gradio_api/queue/join", timeout=60,
                            json={"data": [default, None], "fn_index": panel, "session_hash": "s1"})
        assert answer.status_code == 200  # the page's own event, through the queue, with its gr.State input


def test_cpu_name_is_one_line_and_names_the_cpu_device():
    name = perf.cpu_name()
    assert name and "\n" not in name and perf.device_name("cpu").startswith(name)
