"""Shared test helpers: tiny model folders, a hand-built offline HF cache, an app server on 127.0.0.1."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from medgan.config import GeneratorConfig, ModelConfig
from medgan.generator import save_model_folder
from medgan.nets import DCGANGenerator

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.name for p in (ROOT / "weights").iterdir() if (p / "config.json").is_file())


def make_model_folder(parent: Path, model_id: str, resolution: int = 32, base_width: int = 8,
                      seed: int = 0, modality: str = "MR") -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig(id=model_id, title=f"Test {model_id}", modality=modality, organ="brain", plane="axial",
                      generator=GeneratorConfig(resolution=resolution, base_width=base_width))
    net = DCGANGenerator(cfg.generator)
    with torch.no_grad():  # non-trivial BN statistics, so folding is exercised
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    folder = parent / model_id
    save_model_folder(folder, cfg, net.eval())
    (folder / "README.md").write_text(f"---\nlicense: mit\n---\n# {model_id}\n\nA tiny random test model.\n")
    return folder


def make_style_folder(parent: Path, model_id: str = "style-tiny", classes: tuple[str, ...] = ("dark", "bright"),
                      resolution: int = 32, seed: int = 0) -> Path:
    """A tiny random style-based (conditional unless classes=()) model folder, parameters moved off init."""
    from medgan.stylenet import StyleGenerator
    gen = GeneratorConfig(arch="style", latent_dim=16, resolution=resolution, base_width=4, max_width=32, w_dim=16,
                          classes=list(classes), condition="level" if classes else "")
    cfg = ModelConfig(id=model_id, title=f"Tiny style {model_id}", modality="MR", organ="brain", plane="axial",
                      generator=gen)
    torch.manual_seed(seed)
    net = StyleGenerator(gen)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        net.mapping.w_avg.normal_()
    folder = parent / model_id
    save_model_folder(folder, cfg, net.eval())
    (folder / "README.md").write_text(f"---\nlicense: mit\n---\n# {model_id}\n\nA tiny random style model.\n")
    return folder


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(env: dict[str, str] | None = None, timeout: float = 180.0, lifetime: int = 600,
                script: Path | None = None):
    """`python app.py` in a subprocess on a free 127.0.0.1 port; yields its URL; always stopped.

    `timeout` in the child (coreutils) stops it by itself even if this process dies. `script` replaces app.py
    (e.g. a launcher that injects faults before running it).
    """
    port = free_port()
    child_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                 "PYTHONUNBUFFERED": "1", **(env or {})}
    log = Path(child_env["GRADIO_TEMP_DIR"]).parent / f"app-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(["timeout", str(lifetime), sys.executable, str(script or ROOT / "app.py")], cwd=ROOT,
                                env=child_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"app did not open port {port} in {timeout}s:\n{log.read_text()[-3000:]}")
        proc.log_path = log  # type: ignore[attr-defined]
        proc.url = url  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def copy_model(src: Path, dst_parent: Path) -> Path:
    dst = dst_parent / src.name
    shutil.copytree(src, dst)
    return dst


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
