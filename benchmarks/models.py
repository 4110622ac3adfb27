"""Which models the benchmarks use: the shipped ones (weights/*), else random stand-ins of the shipped shapes."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from medgan.config import GeneratorConfig, ModelConfig
from medgan.generator import save_model_folder
from medgan.nets import DCGANGenerator

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
# The shipped architectures: 64² with base width 64 (the classic DCGAN) and 128².
STANDINS = {"standin-64": dict(resolution=64, base_width=64), "standin-128": dict(resolution=128, base_width=64)}


@dataclass
class BenchModel:
    id: str
    folder: Path
    config: ModelConfig
    shipped: bool


def random_model(parent: Path, model_id: str, resolution: int, base_width: int, seed: int = 0) -> Path:
    """Random weights with non-trivial BatchNorm statistics (so folding is exercised), saved as a folder."""
    torch.manual_seed(seed)
    cfg = ModelConfig(id=model_id, title=f"Benchmark stand-in {resolution}²", modality="MR", organ="brain",
                      description="Random weights with the shipped architecture, for speed measurements only.",
                      generator=GeneratorConfig(resolution=resolution, base_width=base_width))
    net = DCGANGenerator(cfg.generator)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.ConvTranspose2d):
                torch.nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    folder = parent / model_id
    save_model_folder(folder, cfg, net.eval())
    (folder / "README.md").write_text(f"---\nlicense: mit\n---\n# {model_id}\n\nRandom weights, for benchmarks.\n")
    return folder


def shipped_models() -> list[BenchModel]:
    found = []
    for folder in sorted(WEIGHTS.glob("*/config.json")):
        try:
            cfg = ModelConfig.load(folder.parent)
        except Exception:  # a broken folder is the app's problem, not the benchmark's
            continue
        if (folder.parent / "model.safetensors").is_file():
            found.append(BenchModel(cfg.id, folder.parent, cfg, True))
    return found


_standin_dir: Path | None = None


def standin_models(resolutions: tuple[int, ...] = (64, 128)) -> list[BenchModel]:
    global _standin_dir
    if _standin_dir is None:
        _standin_dir = Path(tempfile.mkdtemp(prefix="medgan-bench-models-"))
    out = []
    for model_id, spec in STANDINS.items():
        if spec["resolution"] not in resolutions:
            continue
        folder = _standin_dir / model_id
        if not (folder / "config.json").is_file():
            random_model(_standin_dir, model_id, **spec)
        out.append(BenchModel(model_id, folder, ModelConfig.load(folder), False))
    return out


def bench_models(quick: bool = False) -> list[BenchModel]:
    """Shipped DCGAN models (one per resolution in quick mode), or stand-ins when none are shipped."""
    # The DCGAN sections compare with the PyTorch-examples DCGAN: style models have their own section.
    models = [m for m in shipped_models() if m.config.generator.arch == "dcgan"] or \
        standin_models((64,) if quick else (64, 128))
    if quick:
        by_res: dict[int, BenchModel] = {}
        for m in models:
            by_res.setdefault(m.config.resolution, m)
        models = [by_res[min(by_res)]]
    return models
