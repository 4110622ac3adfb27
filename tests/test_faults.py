"""Faults with defined behaviour: bad or changing model folders, the Hub unreachable, a full disk, slow
requests (time limit), a full queue, Gradio's cache and old downloads swept. Each is checked through a
real app on 127.0.0.1 (and the cheap ones in-process too): a clear error, nothing partial left behind,
and the server keeps serving."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from gradio_client import Client

from helpers import ROOT, free_port, make_model_folder, running_app
from medigan_fixtures import add_foreign_package
from medgan import ConfigError, GenerationError, MedganError, Registry, WeightsError
from medgan import limits, service
from medgan.sources.local import LocalSource

LEAKS = ("Traceback", 'File "', "/tmp/", str(ROOT))


def assert_clear(message: str, *paths: Path) -> None:
    """A message fit for a remote user: no traceback, no server-side path."""
    assert message and message != "None"
    for leak in (*LEAKS, *map(str, paths)):
        assert leak not in message, f"{leak!r} leaked into {message!r}"


def error_of(client: Client, *args, api_name: str = "/generate") -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def generate_ok(client: Client, model: str, count: int = 2) -> None:
    result = client.predict(model, 7, count, api_name="/generate")
    assert [r["caption"] for r in result] == [f"SYNTHETIC · {model} · seed 7 · #{i}" for i in range(count)]


class Evil:
    """A pickle that would create a file if anything ever unpickled it."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def make_bad_folders(weights: Path, marker: Path) -> None:
    pickled = make_model_folder(weights, "bad-pickle", seed=1)
    (pickled / "model.safetensors").unlink()
    (pickled / "model.pt").write_bytes(pickle.dumps(Evil(marker)))
    corrupt = make_model_folder(weights, "bad-corrupt", seed=2)
    data = bytearray((corrupt / "model.safetensors").read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")  # a header length far beyond the file
    (corrupt / "model.safetensors").write_bytes(bytes(data))
    shapes = make_model_folder(weights, "bad-shapes", seed=3, base_width=8)
    config = json.loads((shapes / "config.json").read_text())
    config["generator"]["widths"] = [2 * w for w in config["generator"]["widths"]]  # weights: half as wide
    (shapes / "config.json").write_text(json.dumps(config))
    broken = make_model_folder(weights, "bad-config", seed=4)
    (broken / "config.json").write_text("{not json")


# --- in-process --------------------------------------------------------------------------------------
def test_bad_folders_are_refused_clearly_in_process(tmp_path):
    marker = tmp_path / "UNPICKLED"
    make_model_folder(tmp_path / "w", "good")
    make_bad_folders(tmp_path / "w", marker)
    source = LocalSource([tmp_path / "w"])
    reg = Registry([source])
    assert sorted(m.id for m in reg.list_models()) == ["bad-corrupt", "bad-pickle", "bad-shapes", "good"]
    assert "bad-config" in source.problems
    expected = {"bad-pickle": "not safetensors", "bad-corrupt": "corrupt or unreadable",
                "bad-shapes": "do not match config.json"}
    for model_id, text in expected.items():
        with pytest.raises(WeightsError, match=text) as info:
            reg.load(model_id)
        assert_clear(str(info.value), tmp_path)
        assert reg.load("good").generate(1, 0, output_type="np").shape == (1, 32, 32)
    assert not marker.exists()


def test_config_asking_for_huge_tensors_is_refused_before_allocating(tmp_path, monkeypatch):
    folder = make_model_folder(tmp_path, "greedy")
    config = json.loads((folder / "config.json").read_text())
    config["generator"]["widths"] = [1_000_000, 1_000_000, 1_000_000]  # ~10^13 parameters
    (folder / "config.json").write_text(json.dumps(config))
    import medgan.generator
    monkeypatch.setattr(medgan.generator, "build_generator", lambda *a: pytest.fail("the network was built"))
    with pytest.raises(ConfigError, match="more than the 100,000,000 allowed") as err:
        Registry([LocalSource([tmp_path])]).load("greedy")
    assert_clear(str(err.value), tmp_path)


def _disk_full_after(n_ok: int):
    """A ZipFile.writestr that writes `n_ok` members, then fails like a full disk (a partial zip exists)."""
    original = zipfile.ZipFile.writestr

    def writestr(self, *args, **kwargs):
        self._fault_writes = getattr(self, "_fault_writes", 0) + 1
        if self._fault_writes > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)
    return writestr


def test_full_disk_during_export_in_process(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("MEDGAN_EXPORT_DIR", str(tmp_path / "exports"))
    reg = Registry([LocalSource([tiny_model.parent])])
    monkeypatch.setattr(zipfile.ZipFile, "writestr", _disk_full_after(1))
    with pytest.raises(MedganError, match="disk full") as err:
        service.export("tiny-test", 1, 3, "png", False, registry=reg)
    assert_clear(str(err.value), tmp_path)
    assert list((tmp_path / "exports").iterdir()) == []  # no partial zip, no .part
    monkeypatch.undo()
    monkeypatch.setenv("MEDGAN_EXPORT_DIR", str(tmp_path / "exports"))
    path = service.export("tiny-test", 1, 3, "png", False, registry=reg)
    assert zipfile.ZipFile(path).testzip() is None


def test_old_exports_are_deleted_after_retention(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_EXPORT_DIR", str(tmp_path))
    old, new, other = tmp_path / "synthetic_a.zip", tmp_path / "synthetic_b.zip", tmp_path / "keep.txt"
    for p in (old, new, other):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert service.cleanup_exports(retention_s=3600) == 1
    assert not old.exists() and new.exists() and other.exists()


def test_time_limit_answers_and_bounds_overdue_work():
    release = threading.Event()
    with pytest.raises(GenerationError, match="time limit of 0.2 s"):
        limits.run_with_time_limit(release.wait, 10, seconds=0.2, max_overdue=1)
    assert not release.is_set() and limits.overdue() == 1  # answered while the work still runs
    with pytest.raises(GenerationError, match="still finishing earlier requests"):
        limits.run_with_time_limit(lambda: 1, seconds=5, max_overdue=1)
    release.set()
    wait_until(lambda: limits.overdue() == 0, timeout=30)
    assert limits.run_with_time_limit(lambda x: x + 1, 1, seconds=5) == 2
    with pytest.raises(ZeroDivisionError):  # errors of the work reach the caller unchanged
        limits.run_with_time_limit(lambda: 1 / 0, seconds=5)
    assert limits.run_with_time_limit(lambda: "no limit", seconds=0) == "no limit"


@pytest.mark.parametrize("name,value", [("MEDGAN_MAX_COUNT", "abc"), ("MEDGAN_MAX_COUNT", "0"),
                                        ("MEDGAN_QUEUE_SIZE", "-1"), ("MEDGAN_REQUEST_TIMEOUT_S", "nan"),
                                        ("MEDGAN_CACHE_CLEAN_S", "1.5")])
def test_bad_limit_settings_are_refused_by_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        limits.summary()


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    for name, value in {"MEDGAN_MAX_COUNT": "5", "MEDGAN_CONCURRENCY": "3", "MEDGAN_QUEUE_SIZE": "9",
                        "MEDGAN_REQUEST_TIMEOUT_S": "2.5", "MEDGAN_EXPORT_RETENTION_S": "60",
                        "MEDGAN_MAX_LOADED_MODELS": "4", "MEDGAN_CACHE_CLEAN_S": "7",
                        "MEDGAN_CACHE_MAX_AGE_S": "8", "MEDGAN_MAX_PARAMS": "1000", "MEDGAN_CACHE_MAX_MB": "1.5"}.items():
        monkeypatch.setenv(name, value)
    assert limits.summary() == {"max_count": 5, "concurrency": 3, "queue_size": 9, "request_timeout_s": 2.5,
                                "export_retention_s": 60.0, "max_loaded_models": 4, "max_params": 1000,
                                "gradio_cache": (7, 8), "max_count_per_call": 4096, "max_upload_bytes": 0,
                                "gpu_duration_s": 60, "medigan_timeout_s": 120.0, "medigan_startup_s": 120.0,
                                "medigan_refresh_s": 86400.0, "medigan_refresh_timeout_s": 3.0, "max_frames": 64,
                                "max_grid": 8, "cache_max_bytes": 3 << 19, "max_body_bytes": 64 << 10,
                                "max_text_chars": 512, "max_per_client": 4, "max_sessions": 256,
                                "perf_details": True, "trusted_proxies": []}


# --- through a real app ------------------------------------------------------------------------------
LAUNCHER = '''
import errno, os, runpy, sys, time, zipfile
sys.path.insert(0, {root!r})
import medgan.generator as g

delays = dict(map(float, kv.split(":")) for kv in os.environ.get("FAULT_DELAYS", "").split(",") if kv)
original_generate = g.Generator.generate

def generate(self, count=16, seed=0, **kw):
    time.sleep(delays.get(count, 0))   # a slow model, for chosen counts only
    return original_generate(self, count, seed, **kw)

g.Generator.generate = generate
flag, original_writestr = os.environ["FAULT_DISK_FULL_FLAG"], zipfile.ZipFile.writestr

def writestr(self, *a, **kw):          # while the flag file exists, the disk "fills" after one member
    self._n = getattr(self, "_n", 0) + 1
    if os.path.exists(flag) and self._n > 1:
        raise OSError(errno.ENOSPC, "No space left on device")
    return original_writestr(self, *a, **kw)

zipfile.ZipFile.writestr = writestr
runpy.run_path({app!r}, run_name="__main__")
'''


def wait_until(condition, timeout: float) -> None:
    """Poll `condition` (an observable state, not a guess at timing) until it holds; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def faulty_app(tmp: Path, env: dict[str, str], lifetime: int = 300):
    """app.py behind a launcher that injects faults (slow counts, a disk that fills on demand)."""
    script = tmp / "launcher.py"
    script.write_text(LAUNCHER.format(root=str(ROOT), app=str(ROOT / "app.py")))
    with running_app(env, lifetime=lifetime, script=script) as proc:
        yield proc.url


@pytest.mark.slow
def test_slow_requests_queue_full_time_limit_and_full_disk(tmp_path):
    make_model_folder(tmp_path / "w", "tiny-test")
    exports, flag = tmp_path / "exports", tmp_path / "disk-full"
    env = {"MEDGAN_WEIGHTS_DIRS": str(tmp_path / "w"), "MEDGAN_EXPORT_DIR": str(exports),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "FAULT_DISK_FULL_FLAG": str(flag),
           "FAULT_DELAYS": "13:4,14:1.5", "MEDGAN_CONCURRENCY": "1", "MEDGAN_QUEUE_SIZE": "2",
           "MEDGAN_REQUEST_TIMEOUT_S": "2",
           "MEDGAN_MAX_PER_CLIENT": "10"}  # one client fills the queue here: its bound is not what is tested
    with faulty_app(tmp_path, env) as url:
        client = Client(url, download_files=False, verbose=False)
        generate_ok(client, "tiny-test")

        # Queue: one running + two waiting; the rest are refused at once. Those accepted run one at a time.
        began = time.perf_counter()
        jobs = [client.submit("tiny-test", 1, 14, api_name="/generate") for _ in range(6)]
        # Once refusals come back the queue is full (each served job holds it 1.5 s): read-only events are off
        # the queue, so the model list still answers, and a second client's page and config still load.
        wait_until(lambda: any(j.done() and j.exception() for j in jobs), timeout=30)
        # (gradio_client always joins the queue; the browser and plain HTTP call queue=False events directly)
        request = urllib.request.Request(f"{url.rstrip('/')}/gradio_api/run/models", data=b'{"data": []}',
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert b"tiny-test" in answer.read()
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"MedGAN Studio" in page.read()
        assert not all(j.done() for j in jobs), "the queue emptied before the read-only checks ran"
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(len(job.result(timeout=60)))
            except Exception as exc:  # noqa: BLE001 - the message is what is checked
                outcomes.append(str(exc))
        elapsed = time.perf_counter() - began
        served = [o for o in outcomes if o == 14]
        refused = [o for o in outcomes if o != 14]
        assert 1 <= len(served) <= 3 and refused, outcomes
        assert all("queue is full" in str(o).lower() for o in refused), outcomes
        assert elapsed >= 0.9 * len(served), (elapsed, outcomes)  # concurrency 1: served one after another

        # Time limit: a 4 s request under a 2 s limit is answered with a clear error after ~2 s ...
        began = time.perf_counter()
        message = error_of(client, "tiny-test", 1, 13)
        assert "time limit of 2 s" in message and time.perf_counter() - began < 3.5, message
        assert_clear(message, tmp_path)
        # ... while it still runs, new work is refused instead of piling up; afterwards all is normal.
        assert "still finishing" in error_of(client, "tiny-test", 1, 2)
        time.sleep(2.5)
        generate_ok(client, "tiny-test")

        # Full disk during a download: a clear message, no partial file, and the server keeps serving.
        flag.touch()
        message = error_of(client, "tiny-test", 1, 3, "png", False, api_name="/download")
        assert "disk full" in message, message
        assert_clear(message, tmp_path)
        assert list(exports.iterdir()) == []
        generate_ok(client, "tiny-test")
        flag.unlink()
        path = Client(url, download_files=str(tmp_path / "dl"), verbose=False).predict(
            "tiny-test", 1, 3, "png", False, api_name="/download")
        assert zipfile.ZipFile(path).testzip() is None
        assert [p.suffix for p in exports.iterdir()] == [".zip"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A plain app over a weights folder the tests change underneath it, plus an unreachable Hub model."""
    tmp = tmp_path_factory.mktemp("live")
    weights = tmp / "w"
    make_model_folder(weights, "tiny-good")
    make_model_folder(weights, "tiny-live", seed=5)
    make_bad_folders(weights, tmp / "UNPICKLED")
    catalogue = tmp / "hub.json"
    catalogue.write_text(json.dumps({"models": [{"id": "hub-missing", "repo_id": "nobody/nothing",
                                                 "revision": "c" * 40}]}))
    dead = free_port()  # nothing listens here: the "Hub" refuses connections
    env = {"MEDGAN_WEIGHTS_DIRS": str(weights), "MEDGAN_HUB_CATALOGUE": str(catalogue),
           "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{dead}", "HF_HOME": str(tmp / "hf"),
           "MEDGAN_EXPORT_DIR": str(tmp / "exports"), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "MEDGAN_EXPORT_RETENTION_S": "1", "MEDGAN_CACHE_CLEAN_S": "1", "MEDGAN_CACHE_MAX_AGE_S": "1"}
    with running_app(env) as app:
        client = Client(app.url, download_files=str(tmp / "dl"), verbose=False)
        yield tmp, weights, client


@pytest.mark.slow
def test_bad_folders_are_refused_through_the_app_and_others_serve(live):
    tmp, weights, client = live
    ids = [m["id"] for m in client.predict(api_name="/models")]
    assert {"tiny-good", "bad-pickle", "bad-corrupt", "bad-shapes"} <= set(ids) and "bad-config" not in ids
    for model_id, text in {"bad-pickle": "not safetensors", "bad-corrupt": "corrupt or unreadable",
                           "bad-shapes": "do not match config.json", "bad-config": "Unknown model id"}.items():
        message = error_of(client, model_id, 1, 2)
        assert text in message, message
        assert_clear(message, tmp)
        generate_ok(client, "tiny-good")
    assert not (tmp / "UNPICKLED").exists()


@pytest.mark.slow
def test_model_folder_corrupted_then_deleted_while_running(live):
    tmp, weights, client = live
    generate_ok(client, "tiny-live")
    weights_file = weights / "tiny-live" / "model.safetensors"
    good = weights_file.read_bytes()
    weights_file.write_bytes(good[: len(good) // 2])  # truncated in place
    message = error_of(client, "tiny-live", 1, 2)
    assert "corrupt or unreadable" in message and "tiny-live" in message, message
    assert_clear(message, tmp)
    generate_ok(client, "tiny-good")
    weights_file.write_bytes(good)  # repaired: served again
    generate_ok(client, "tiny-live")
    shutil.rmtree(weights / "tiny-live")
    assert "Unknown model id 'tiny-live'" in error_of(client, "tiny-live", 1, 2)
    assert "tiny-live" not in [m["id"] for m in client.predict(api_name="/models")]
    generate_ok(client, "tiny-good")


@pytest.mark.slow
def test_hub_unreachable_with_no_cache_through_the_app(live):
    tmp, _, client = live
    listing = {m["id"]: m for m in client.predict(api_name="/models")}
    assert listing["hub-missing"]["source"] == "hub"
    began = time.perf_counter()
    message = error_of(client, "hub-missing", 1, 2)
    assert "hub-missing" in message and ("could not fetch" in message or "not in the local" in message), message
    assert time.perf_counter() - began < 30
    assert_clear(message, tmp)
    generate_ok(client, "tiny-good")


@pytest.mark.slow
def test_gradio_cache_and_old_downloads_are_swept(live):
    tmp, _, client = live
    first = Path(client.predict("tiny-good", 3, 2, "png", False, api_name="/download"))
    exports = tmp / "exports"
    assert len(list(exports.glob("synthetic_*.zip"))) >= 1
    cached = [p for p in (tmp / "gradio").rglob("*") if p.is_file()]
    assert cached
    time.sleep(3.2)  # sweeps every 1 s of files older than 1 s; downloads older than 1 s go on the next export
    client.predict("tiny-good", 4, 2, "png", False, api_name="/download")
    assert all(not p.exists() for p in cached), [p for p in cached if p.exists()]
    names = [p.name for p in exports.glob("synthetic_*.zip")]
    assert len(names) == 1 and "seed4" in names[0], names
    assert first.exists()  # the client's own copy is not the server's business


# --- a medigan worker killed mid-request ---------------------------------------------------------------
SLOW_PACKAGE = """
    import os, time
    def generate(model_file, num_samples, output_path, save_images, **kwargs):
        open("models/T_SLOW/worker.pid", "w").write(str(os.getpid()))
        time.sleep(600)
"""


@pytest.mark.slow
def test_medigan_worker_killed_mid_request(tmp_path, tiny_model):
    home = tmp_path / "medigan-home"
    model = add_foreign_package(home, "T_SLOW", SLOW_PACKAGE)
    pid_file = home / "models" / "T_SLOW" / "worker.pid"
    env = {"MEDGAN_WEIGHTS_DIRS": str(tiny_model.parent), "MEDGAN_MEDIGAN_HOME": str(home),
           "MEDGAN_REQUEST_TIMEOUT_S": "300", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    with running_app(env) as app:
        client = Client(app.url, download_files=False, verbose=False)
        job = client.submit(model, 1, 2, api_name="/generate")
        deadline = time.time() + 180  # the worker imports torch and medigan first
        while not pid_file.exists() and time.time() < deadline and not job.done():
            time.sleep(0.2)
        assert pid_file.exists(), "the worker never started the model's code"
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(Exception) as info:
            job.result(timeout=60)
        message = str(info.value)
        assert "medigan worker was killed by signal 9" in message and "T_SLOW" in message, message
        assert_clear(message, tmp_path, home)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        generate_ok(client, "tiny-test")  # the server keeps serving


# --- SIGTERM during training, then resume ----------------------------------------------------------------
TRAIN = ["--size", "32", "--batch-size", "8", "--base-width", "8", "--d-width", "8", "--threads", "1",
         "--log-every", "2", "--sample-every", "4", "--ckpt-every", "4", "--steps", "12"]


def phantoms(path: Path) -> Path:
    """40 noisy disc slices, two subjects: enough for a few training steps."""
    from training.data import SliceDataset
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    images = np.stack([((xx ** 2 + yy ** 2 < rng.uniform(0.4, 0.8)) * 180 + rng.normal(0, 8, xx.shape))
                       .clip(0, 255).astype(np.uint8)[None] for _ in range(40)])
    split = np.array(["train"] * 32 + ["heldout"] * 8)
    subject = np.where(split == "train", "a", "b")
    return SliceDataset(images, subject, subject, np.full(40, 2, np.int8), np.arange(40, dtype=np.int32), split,
                        meta={"dataset": "phantom", "size": 32}).save(path)


@pytest.mark.slow
def test_training_sigtermed_then_resumed_keeps_checkpoints_and_steps(tmp_path):
    from training.gan import checkpoint as ckpt
    from training.gan.cli import main

    data, run = phantoms(tmp_path / "p.npz"), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "training.train", "--data", str(data), *TRAIN, "--out", str(run)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if line.startswith("checkpoint (periodic)") or not line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "checkpoint (stopped by SIGTERM)" in out and "--resume" in out, out
    assert not (run / "model").exists()  # interrupted runs checkpoint; only finished ones export
    assert not list(run.glob("*.tmp*")) and not list(run.glob(".*.tmp-*"))
    tensors, meta = ckpt.load_checkpoint(run)
    stopped = meta["step"]
    assert 4 <= stopped < 12 and "G.main.0.weight" in tensors, (stopped, out)
    before = {p.name: p.read_bytes() for p in (run / "samples").glob("*.png")}
    assert main(["--resume", str(run)]) == 0
    assert ckpt.load_checkpoint(run)[1]["step"] == 12
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps  # continued, not restarted or repeated
    assert all((run / "samples" / name).read_bytes() == data for name, data in before.items())
    # Interrupted + resumed gives the weights of an uninterrupted run, bit for bit.
    assert main(["--data", str(data), *TRAIN, "--out", str(tmp_path / "straight")]) == 0
    a = (run / "model" / "model.safetensors").read_bytes()
    b = (tmp_path / "straight" / "model" / "model.safetensors").read_bytes()
    from safetensors.torch import load
    wa, wb = load(a), load(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
