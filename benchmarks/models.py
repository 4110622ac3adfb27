"""Which models the benchmarks use: the shipped ones (weights/*), else random stand-ins of the shipped shapes."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from medgan.config import ModelConfig
from medgan.testing import make_model_folder

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
# The shipped DCGANs' shape: 64², base width 32 (half the classic DCGAN's 64: widths 256-128-64-32, 0.052
# GFLOP/image); and the same base width at 128², for how cost grows with resolution.
STANDINS = {"standin-64": dict(resolution=64, base_width=32), "standin-128": dict(resolution=128, base_width=32)}


@dataclass
class BenchModel:
    id: str
    folder: Path
    config: ModelConfig
    shipped: bool


def random_model(parent: Path, model_id: str, resolution: int, base_width: int, seed: int = 0) -> Path:
    """Random weights (DCGAN init, non-trivial BatchNorm statistics so folding is exercised), saved as a folder."""
    return make_model_folder(parent, model_id, resolution=resolution, base_width=base_width, seed=seed,
                             title=f"Benchmark stand-in {resolution}²", plane="", init_std=0.02,
                             description="Random weights with the shipped architecture, for speed measurements only.",
                             readme="Random weights, for benchmarks.")


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
