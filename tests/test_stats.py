"""Performance numbers: medgan.perf unit behaviour, and the app's /stats API + warm-up through a real server."""
import time

import pytest
from gradio_client import Client

from helpers import make_model_folder, running_app
from medgan import perf, service
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


def test_warm_up_loads_only_the_given_model_and_survives_a_broken_one(tmp_path):
    make_model_folder(tmp_path, "tiny-a")
    make_model_folder(tmp_path, "tiny-b")
    registry = Registry(default_sources([tmp_path]))
    assert perf.warm_up("tiny-b", registry) > 0
    assert registry.loaded_ids() == ["tiny-b"]
    (tmp_path / "tiny-a" / "model.safetensors").write_bytes(b"broken")
    assert perf.warm_up("tiny-a", registry) is None
    assert perf.warm_up(None, registry) is None


@pytest.mark.slow
def test_stats_api_and_start_up_warm_up_through_the_app(tmp_path):
    weights = tmp_path / "weights"
    make_model_folder(weights, "aaa-default", resolution=64, base_width=8)
    make_model_folder(weights, "zzz-other")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights)}) as app:
        client = Client(app.url, download_files=False, verbose=False)
        local = [m["id"] for m in client.predict(api_name="/models") if m["source"] == "local"]
        default = client.predict(api_name="/stats")["model"]  # optional input: the dropdown's default
        assert default == service.default_model(Registry([LocalSource([weights, DEFAULT_WEIGHTS_DIR])]))
        # The default model is loaded in the background at start-up, without any request; the others are not.
        deadline = time.time() + 60
        while not (s := client.predict(default, api_name="/stats"))["history"] and time.time() < deadline:
            time.sleep(0.2)
        assert set(s) == FIELDS and s["loaded"] and s["history"][0]["count"] == 1  # the warm-up call
        other = next(m for m in local if m != default)
        assert client.predict(other, api_name="/stats")["loaded"] is False
        client.predict(default, 5, 4, api_name="/generate")
        s = client.predict(default, api_name="/stats")
        assert s["model"] == default and s["last_count"] == 4 and s["last_seconds"] > 0 and s["images_per_s"] > 0
        assert s["load_seconds"] > 0 and s["rss_mb"] > 100 and s["device"] == "cpu" and s["device_name"]
        assert default in s["loaded_models"] and other not in s["loaded_models"]
        assert client.predict("no-such-model", api_name="/stats")["loaded"] is False


def test_cpu_name_is_one_line_and_names_the_cpu_device():
    name = perf.cpu_name()
    assert name and "\n" not in name and perf.device_name("cpu").startswith(name)
