"""Shared test helpers: a hand-built offline HF cache and Playwright bits here; tiny model folders and the app on
127.0.0.1 come from medgan.testing (benchmarks use the same ones) and are re-exported."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from medgan.config import ModelConfig
from medgan.testing import (ROOT, free_port, launched_app, make_model_folder, make_style_folder,  # noqa: F401
                            running_app, wait_for_port)
from scripts.screenshots import set_slider, wait_for_images  # noqa: F401 (Playwright helpers, shared)

SHIPPED = sorted(p.name for p in (ROOT / "weights").iterdir() if (p / "config.json").is_file())
# Tests of DCGAN-only behaviour (no labels, no mixing) need a DCGAN, whatever sorts first among the shipped;
# the library's own config loader decides (a config without generator.arch is a DCGAN).
SHIPPED_DCGANS = [name for name in SHIPPED if ModelConfig.load(ROOT / "weights" / name).generator.arch == "dcgan"]
assert SHIPPED_DCGANS, "no shipped DCGAN folder: the DCGAN-only tests need one"
SHIPPED_DCGAN = SHIPPED_DCGANS[0]


def build_hf_cache(cache_dir: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40) -> str:
    """The layout hf_hub_download reads offline: models--ORG--NAME/{refs/main, blobs/<sha256>, snapshots/...}."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snapshot))
    return commit


def run_process_group(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run cmd (e.g. torch's launcher and its workers) in its own process group from the repository root; a hang
    past `timeout` kills the whole group, workers included, and fails with the timeout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def copy_model(src: Path, dst_parent: Path) -> Path:
    dst = dst_parent / src.name
    shutil.copytree(src, dst)
    return dst


def open_app(browser, url: str, model_text: str, width: int = 1280, height: int = 900):
    """A new page on the app with the model whose dropdown label contains `model_text` selected."""
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    page.goto(url)
    page.wait_for_selector("#generate")
    page.locator("#model input").click()
    page.get_by_role("option").filter(has_text=model_text).first.click()
    return page


def download_from(page, elem_id: str, path: Path) -> Path:
    """Click the first link of a gr.File output and save the download to `path`."""
    link = page.locator(f"#{elem_id} a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as dl:
        link.click()
    dl.value.save_as(path)
    return path


def patient_dicoms(folder: Path, patients: list[tuple[str, ...]], per_patient: int, shift: int = 2) -> Path:
    """`folder/<NAME>[_<birth>]_<k>.dcm`: pydicom's MR_small with each patient's (PatientID, PatientName[,
    PatientBirthDate]) set and its pixels shifted per file, so every slice differs (privacy fixtures)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    folder.mkdir(parents=True, exist_ok=True)
    for p, (pid, name, *birth) in enumerate(patients):
        for k in range(per_patient):
            ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
            ds.PatientID, ds.PatientName = pid, name
            if birth:
                ds.PatientBirthDate = birth[0]
            ds.PixelData = np.roll(ds.pixel_array, shift * k + 5 * p, axis=1).astype(ds.pixel_array.dtype).tobytes()
            ds.save_as(folder / f"{'_'.join([name.replace('^', '_'), *birth, str(k)])}.dcm")
    return folder


def run_push(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m training.push` in a subprocess without HF_HUB_OFFLINE (huggingface_hub reads it at import), with
    a test token."""
    child = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    child.update(HF_TOKEN="hf_test_token", HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "training.push", *args], cwd=ROOT, env=child, capture_output=True,
                          text=True, timeout=120)
