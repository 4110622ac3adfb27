"""The style-based generator: its inference layout vs the plain module, its cost per image vs DCGAN, the
latent controls (interpolate, mix) vs generate, and training throughput (kimg per CPU-hour) of both archs.

- medgan:    Generator.generate(n, seed, output_type="np") — per-index latents and classes, FastStyle on tiles
             of 8 (folded gains, one style matmul, precomputed const layer), uint8 into one array;
- reference: the same network as trained (medgan.stylenet.StyleGenerator, eval) on torch.randn latents and
             torch.randint classes, whole batch at once, same uint8 conversion.
Ratios come from interleaved rounds; the 1-thread CPU-time ratio ignores other processes.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medgan.config import GeneratorConfig, ModelConfig
from medgan.generator import Generator, load_weights, save_model_folder, to_uint8
from medgan.stylefast import FastStyle
from medgan.stylenet import StyleGenerator

from .harness import interleaved, ratio, summary
from .inference import SEED, one_thread
from .models import BenchModel, shipped_models, standin_models

# The shipped style models' shape (training.train's style defaults), for a stand-in when none is shipped.
STYLE_STANDIN = dict(arch="style", latent_dim=128, base_width=16, max_width=256, w_dim=256, mapping_layers=2,
                     classes=["inferior", "lower", "middle", "upper", "superior"], condition="level")


def style_standin(resolution: int) -> BenchModel:
    folder = Path(tempfile.mkdtemp(prefix="medgan-bench-style-")) / f"style-standin-{resolution}"
    cfg = ModelConfig(id=folder.name, title=f"Style stand-in {resolution}²", modality="MR", organ="brain",
                      generator=GeneratorConfig(resolution=resolution, **STYLE_STANDIN))
    torch.manual_seed(0)
    save_model_folder(folder, cfg, StyleGenerator(cfg.generator).eval())
    return BenchModel(cfg.id, folder, cfg, False)


def pick_models(quick: bool) -> tuple[BenchModel, BenchModel]:
    """(style model, DCGAN model) at 64²: shipped ones when present, else stand-ins of the shipped shapes."""
    shipped = [m for m in shipped_models() if m.config.resolution == 64]
    style = next((m for m in shipped if m.config.generator.arch == "style"), None) or style_standin(64)
    dcgan = next((m for m in shipped if m.config.generator.arch == "dcgan"), None) or standin_models((64,))[0]
    return style, dcgan


def reference_generate(ref: StyleGenerator, n: int) -> np.ndarray:
    cfg = ref.cfg
    labels = torch.randint(len(cfg.classes), (n,)) if cfg.classes else None
    with torch.inference_mode():
        return to_uint8(ref(torch.randn(n, cfg.latent_dim), labels))


def compare(contenders: dict[str, Any], n: int, rounds: int, min_s: float, slower: str, faster: str) -> dict[str, Any]:
    times = interleaved(contenders, rounds, min_s)
    with one_thread():
        cpu = interleaved(contenders, rounds, min_s, clock=time.thread_time)
    return {**{k: summary(v, n) for k, v in times.items()}, "ratio": round(ratio(times, slower, faster), 3),
            "ratio_1thread_cpu": round(ratio(cpu, slower, faster), 3)}


def run_style(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    style_m, dcgan_m = pick_models(quick)
    gen = Generator(style_m.config, load_weights(style_m.folder, style_m.id), device="cpu")
    dcgan = Generator(dcgan_m.config, load_weights(dcgan_m.folder, dcgan_m.id), device="cpu")
    ref = gen.reference_net
    rounds, min_s = (3, 0.02) if quick else (9, 0.1)
    out: dict[str, Any] = {"includes": __doc__.split("\n\n", 1)[1].strip(), "model": style_m.id,
                           "shipped": style_m.shipped, "dcgan_model": dcgan_m.id, "vs_reference": [],
                           "vs_dcgan": [], "explore": []}
    for n in ([1, 16] if quick else [1, 16, 64]):
        row = compare({"medgan": lambda n=n: gen.generate(n, SEED, output_type="np"),
                       "reference": lambda n=n: reference_generate(ref, n)}, n, rounds, min_s, "reference", "medgan")
        out["vs_reference"].append({"batch": n, **row})
    n = 16 if quick else 64
    row = compare({"style": lambda: gen.generate(n, SEED, output_type="np"),
                   "dcgan": lambda: dcgan.generate(n, SEED, output_type="np")}, n, rounds, min_s, "style", "dcgan")
    out["vs_dcgan"].append({"batch": n, **row})  # ratio = style time / DCGAN time per image
    frames = 8 if quick else 16
    for name, call in (("interpolate", lambda: gen.interpolate(1, 2, frames, output_type="np")),
                       ("mix", lambda: gen.mix(list(range(2)), list(range(2, 2 + frames // 2)), output_type="np"))):
        row = compare({name: call, "generate": lambda: gen.generate(frames, SEED, output_type="np")},
                      frames, rounds, min_s, name, "generate")
        out["explore"].append({"call": name, "images": frames, **row})  # ratio = call time / generate time
    return out


def run_detail_block(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """A 128² detail block (bilinear up + two modulated 3x3 convs + toRGB, 16 -> 32 channels, the shape
    training.grow appends to the 64² models): FastStyle's layout vs the plain module, styles included,
    const noise, on the same 64² features. Ratio = plain time / fast time."""
    cfg = GeneratorConfig(resolution=128, detail_from=128, widths=[256, 128, 64, 32, 16, 32], **STYLE_STANDIN)
    torch.manual_seed(0)
    net = StyleGenerator(cfg).eval()
    fast = FastStyle(net)
    rounds, min_s = (3, 0.02) if quick else (9, 0.1)
    rows = []
    for n in ([4, 16] if quick else [16, 64]):
        x = torch.randn(n, 16, 64, 64)
        image = torch.randn(n, 1, 64, 64)
        ws = torch.randn(n, 1, cfg.w_dim).expand(-1, net.num_ws, -1)
        x_fast = x.contiguous(memory_format=torch.channels_last)

        def plain() -> torch.Tensor:
            with torch.inference_mode():
                return net.blocks[0](x, image, ws)[1]

        def folded() -> torch.Tensor:
            with torch.inference_mode():
                styles = fast.styles(ws)
                convs = len(fast.layers)
                return fast.block(0, x_fast, image, styles[:convs], styles[convs:])[1]

        rows.append({"batch": n, **compare({"fast": folded, "plain": plain}, n, rounds, min_s, "plain", "fast")})
    return {"includes": run_detail_block.__doc__, "rows": rows}


def run_training_arch(models: list[BenchModel], quick: bool) -> dict[str, Any]:
    """kimg per CPU-hour of one training step (small-data recipe, 1 thread, thread CPU time), per arch and size."""
    from training.gan.config import make_config
    from training.gan.trainer import Trainer

    sizes, batch, rounds = ((32,), 16, 2) if quick else ((64, 128), 64, 5)
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="medgan-bench-arch-") as tmp, one_thread():
        for size in sizes:
            images = rng.integers(0, 256, (256, 1, size, size), dtype=np.uint8)
            labels = rng.integers(0, 5, 256)
            for arch in ("dcgan", "style"):
                cfg = make_config({"arch": arch, "size": size, "batch_size": batch, "out": tmp, "steps": 10,
                                   **({"condition": "level"} if arch == "style" else {})})
                trainer = Trainer(cfg, images, labels=labels if arch == "style" else None,
                                  classes=STYLE_STANDIN["classes"] if arch == "style" else None)
                seconds = interleaved({"step": trainer.train_step}, rounds, 0.0, clock=time.thread_time)["step"]
                med = sorted(seconds)[len(seconds) // 2]
                rows.append({"arch": arch, "size": size, "batch": batch, "cpu_s_per_step": round(med, 3),
                             "kimg_per_cpu_hour": round(batch / 1000 / med * 3600, 1)})
    return {"recipe": "small-data", "threads": 1, "rows": rows}
