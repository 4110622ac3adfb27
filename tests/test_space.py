"""The Space: README front matter agrees with requirements.txt and the Hub catalogue, and app.py run as on
Spaces (SPACE_ID set) binds 0.0.0.0, keeps its queue limits, wraps generation with ZeroGPU's `spaces.GPU` when
that package is importable (a fake one here), and serves a Hub-catalogued model from the offline HF cache."""
from __future__ import annotations

import hashlib
import json
import socket
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, build_hf_cache, make_model_folder, running_app

from training.publish.push import catalogue_repo_ids, front_matter, gradio_pin

FAKE_SPACES = '''
"""Stand-in for the `spaces` package: GPU(...) records each decoration and each call to FAKE_SPACES_LOG."""
import functools, json, os

def _log(**event):
    with open(os.environ["FAKE_SPACES_LOG"], "a") as f:
        f.write(json.dumps(event) + "\\n")

def GPU(fn=None, duration=None):
    def decorate(f):
        _log(event="applied", fn=f.__name__, duration=duration)
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            _log(event="called", fn=f.__name__)
            return f(*args, **kwargs)
        return wrapper
    return decorate(fn) if callable(fn) else decorate
'''


def test_readme_front_matter_parses_and_agrees_with_requirements_and_catalogue():
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = front_matter(text)
    assert meta["sdk"] == "gradio"
    assert str(meta["sdk_version"]) == gradio_pin((ROOT / "requirements.txt").read_text()) == "6.31.0"
    assert str(meta["python_version"]) == "3.11"
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["license"] == "mit" and {"medical-imaging", "gan", "synthetic-data"} <= set(meta["tags"])
    assert meta["title"] and meta["emoji"] and 0 < len(meta["short_description"]) <= 60  # the Hub's limit
    # `models:` may only name published repos (those of the catalogue); absent while nothing is published.
    # `python -m training.push --space` fills it in from the catalogue in the README it uploads.
    assert set(meta.get("models", [])) <= set(catalogue_repo_ids(ROOT / "weights" / "hub.json"))


@pytest.mark.slow
def test_app_runs_as_a_space_with_zerogpu_wrapper_and_hub_model(tmp_path):
    weights = tmp_path / "weights"
    folder = make_model_folder(weights, "space-tiny")
    # a Hub-catalogued copy of the same model, present only in the offline HF cache
    files = {n: (folder / n).read_bytes() for n in ("config.json", "model.safetensors", "README.md")}
    commit = build_hf_cache(tmp_path / "hf-cache", "medgan-test/space-tiny", files, commit="d" * 40)
    catalogue = tmp_path / "hub.json"
    catalogue.write_text(json.dumps({"models": [{
        "id": "hub-space-tiny", "repo_id": "medgan-test/space-tiny", "revision": commit,
        "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}}]}))
    fake = tmp_path / "fake-spaces" / "spaces"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(textwrap.dedent(FAKE_SPACES))
    log = tmp_path / "spaces.jsonl"
    env = {"SPACE_ID": "medgan-test/studio", "GRADIO_SERVER_NAME": "", "PYTHONPATH": str(fake.parent),
           "FAKE_SPACES_LOG": str(log), "MEDGAN_WEIGHTS_DIRS": str(weights), "MEDGAN_HUB_CATALOGUE": str(catalogue),
           "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "MEDGAN_MEDIGAN": "0", "MEDGAN_MCP": "1"}
    with running_app(env=env, lifetime=180) as app:
        port = int(app.url.rsplit(":", 1)[1])
        python = [p for p in psutil.Process(app.pid).children(recursive=True) if "python" in p.name()]
        listening = {c.laddr.ip for p in python for c in p.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"0.0.0.0"}  # all interfaces, as Spaces needs; we only connect to 127.0.0.1
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass

        from gradio_client import Client
        client = Client(app.url, verbose=False, download_files=False)
        local = client.predict("space-tiny", 3, 2, api_name="/generate")
        hub = client.predict("hub-space-tiny", 3, 2, api_name="/generate")
        with urllib.request.urlopen(f"{app.url}/config", timeout=10) as response:
            config = json.loads(response.read())
    out = Path(app.log_path).read_text()
    assert "[medgan] Space medgan-test/studio: device cpu, ZeroGPU on" in out
    assert "MEDGAN_MCP=1 but gradio[mcp] is not installed" in out  # optional extra: said, not fatal

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert {(e["fn"], e["duration"]) for e in events if e["event"] == "applied"} == {("generate", 60),
                                                                                     ("download", 60),
                                                                                     ("interpolate", 60), ("mix", 60)}
    assert [e["fn"] for e in events if e["event"] == "called"] == ["generate", "generate"]

    assert [g["caption"] for g in local] == ["SYNTHETIC · space-tiny · seed 3 · #0", "SYNTHETIC · space-tiny · seed 3 · #1"]
    assert [g["caption"] for g in hub] == ["SYNTHETIC · hub-space-tiny · seed 3 · #0",
                                           "SYNTHETIC · hub-space-tiny · seed 3 · #1"]
    from PIL import Image

    def pixels(item):
        path = item["image"]["path"] if isinstance(item["image"], dict) else item["image"]
        with Image.open(path) as img:
            return img.tobytes()
    assert [pixels(g) for g in hub] == [pixels(g) for g in local]  # same weights, pulled from the cache

    # the queue is on for the heavy events (its limits come from medgan.limits, tested with the app's faults)
    assert config["enable_queue"] is True
    assert all(d["queue"] is not False for d in config["dependencies"] if d.get("api_name") in ("generate", "download"))
