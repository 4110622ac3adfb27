"""Weights + config -> `Generator.generate(count, seed)`.

Determinism: image i's latent comes from its own RNG stream seeded by (seed, i), so the same (model,
seed) always gives the same pixels and count=4 returns the first 4 images of count=16.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import limits
from .config import GeneratorConfig, ModelConfig
from .errors import ConfigError, InvalidArgumentError, WeightsError
from .fastnet import FastDCGAN
from .nets import DCGANGenerator
from .validation import MAX_SEED, as_int, check_count, check_seed

WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
OUTPUT_TYPES = ("pil", "np", "pt")
BATCH_SIZE = 64  # largest forward pass on GPU (see TILE)
# Forward passes run on fixed tiles of images aligned to absolute indices (tile k = images k*T..k*T+T-1),
# so image i is always computed with the same neighbours and shapes: its pixels cannot depend on count or
# start (oneDNN/MKL pick kernels by batch size, which otherwise flips a grey level now and then). On CPU a
# tile of 8 is as fast per image as 64 (benchmarks/), and count=1 costs 8 images (~10 ms).
TILE = {"cpu": 8}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> torch.device:
    wanted = os.environ.get("MEDGAN_DEVICE")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def latents(seed: int, count: int, latent_dim: int, start: int = 0) -> np.ndarray:
    """Latent vectors for indices start..start+count-1: one independent PCG64 stream per (seed, index)."""
    seed = check_seed(seed)
    out = np.empty((count, latent_dim), dtype=np.float32)
    for row, index in enumerate(range(start, start + count)):
        out[row] = np.random.default_rng([seed, index]).standard_normal(latent_dim, dtype=np.float32)
    return out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float [n, C, H, W] -> uint8 [n, H, W] (grayscale) or [n, H, W, C]."""
    pixels = ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)


def fold_batchnorm(net: DCGANGenerator) -> torch.nn.Sequential:
    """Fold each eval-mode BatchNorm into the transposed conv before it (inference uses running stats)."""
    layers: list[torch.nn.Module] = []
    modules = list(net.main)
    i = 0
    while i < len(modules):
        layer = modules[i]
        nxt = modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(layer, torch.nn.ConvTranspose2d) and isinstance(nxt, torch.nn.BatchNorm2d):
            scale = nxt.weight / torch.sqrt(nxt.running_var + nxt.eps)
            fused = torch.nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                             layer.stride, layer.padding, bias=True)
            fused.weight.data = layer.weight.detach() * scale.detach().view(1, -1, 1, 1)
            fused.bias.data = (nxt.bias - nxt.running_mean * scale).detach()
            layers.append(fused)
            i += 2
        else:
            layers.append(layer)
            i += 1
    return torch.nn.Sequential(*layers)


def inference_net(net: DCGANGenerator, device: torch.device, optimize: bool = True,
                  dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The module generate() runs. optimize: BatchNorm folded, then on CPU (fp32) the FastDCGAN layout, on GPU
    channels-last convs (cuDNN's NHWC kernels); otherwise the plain module as trained."""
    if not optimize:
        return copy.deepcopy(net.main).eval().to(device, dtype)
    folded = fold_batchnorm(net).eval()
    if device.type == "cpu" and dtype == torch.float32:
        try:
            return FastDCGAN(folded).eval()
        except ValueError:  # not the classic layout: the folded module is still correct
            pass
    return folded.to(device=device, dtype=dtype, memory_format=torch.channels_last)


@dataclass
class GenerationStats:
    """Timings of the last call, for the app's performance panel."""
    seconds: float = 0.0
    count: int = 0
    history: list[tuple[float, int, float]] = field(default_factory=list)  # (unix time, count, seconds)


class Generator:
    """A loaded DCGAN generator. Thread-safe; one forward pass at a time per model."""

    def __init__(self, config: ModelConfig, state_dict: dict[str, torch.Tensor], *,
                 device: torch.device | str | None = None, optimize: bool = True, revision: str = "",
                 source: str = "local", precision: str | None = None):
        self.config = config
        self.revision = revision
        self.source = source
        self.device = torch.device(device) if device is not None else default_device()
        check_size(config)  # before allocating: config.json is untrusted and could ask for terabytes
        net = DCGANGenerator(config.generator)
        check_state_dict(config, net, state_dict)
        net.load_state_dict(state_dict, strict=False)
        net.eval()
        self.reference_net = net  # the unoptimised module, kept for checks and for training-side use
        # fp32 by default; bf16/fp16 (MEDGAN_PRECISION or precision=) are for GPUs: faster there, but pixels
        # then differ from fp32 by a few grey levels, so they are opt-in.
        self.precision = precision or os.environ.get("MEDGAN_PRECISION", "fp32")
        if self.precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.net = inference_net(net, self.device, optimize, PRECISIONS[self.precision])
        self.optimized = optimize
        self.tile = TILE.get(self.device.type, BATCH_SIZE)
        self.stats = GenerationStats()
        self._lock = threading.Lock()

    # --- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs) -> "Generator":
        folder = Path(folder)
        config = ModelConfig.load(folder)
        return cls(config, load_weights(folder, config.id), **kwargs)

    def save(self, folder: str | Path) -> None:
        save_model_folder(folder, self.config, self.reference_net)

    @property
    def id(self) -> str:
        return self.config.id

    # --- sampling ----------------------------------------------------------------------------------
    def generate(self, count: int = 16, seed: int = 0, *, start: int = 0,
                 output_type: Literal["pil", "np", "pt"] = "pil"):
        """Images start..start+count-1 of `seed`: PIL images, a uint8 array [n, H, W], or a float tensor."""
        count, seed = check_count(count), check_seed(seed)
        start = as_int("start", start)
        if not 0 <= start <= MAX_SEED:
            raise InvalidArgumentError(f"start must be between 0 and 2**63-1, got {start}"[:80])
        if not isinstance(output_type, str) or output_type not in OUTPUT_TYPES:
            raise InvalidArgumentError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, "
                                       f"got {str(output_type)[:40]!r}")
        began = time.perf_counter()
        result = self._generate(count, seed, start, output_type == "pt")
        self._record(count, time.perf_counter() - began)
        if output_type == "pil":
            mode = "L" if result.ndim == 3 else "RGB"
            return [Image.fromarray(a, mode=mode) for a in result]
        return result

    def _generate(self, count: int, seed: int, start: int, floats: bool) -> np.ndarray | torch.Tensor:
        """Tile by tile (see TILE), into one preallocated output."""
        tile, dim = self.tile, self.config.generator.latent_dim
        first = start - start % tile
        z = torch.from_numpy(latents(seed, -(-(start + count - first) // tile) * tile, dim, first))
        dtype = PRECISIONS[self.precision]
        out: np.ndarray | torch.Tensor | None = None
        with self._lock, torch.inference_mode():
            for t0 in range(first, start + count, tile):
                images = self.net(z[t0 - first:t0 - first + tile].to(self.device, dtype).view(tile, dim, 1, 1))
                lo, hi = max(start, t0), min(start + count, t0 + tile)
                images = images[lo - t0:hi - t0]
                part = images.float().cpu() if floats else to_uint8(images)
                if out is None:
                    shape = (count, *part.shape[1:])
                    out = torch.empty(shape) if floats else np.empty(shape, dtype=np.uint8)
                out[lo - start:hi - start] = part
        return out

    def _record(self, count: int, seconds: float) -> None:
        self.stats.seconds, self.stats.count = seconds, count
        self.stats.history = (self.stats.history + [(time.time(), count, seconds)])[-100:]


def param_count(cfg: GeneratorConfig) -> int:
    """Parameters of DCGANGenerator(cfg), computed without building it: 4x4 transposed convs + BN affine."""
    chans = [cfg.latent_dim, *cfg.widths, cfg.channels]
    return sum(c_in * c_out * 16 for c_in, c_out in zip(chans, chans[1:])) + 2 * sum(cfg.widths)


def check_size(config: ModelConfig) -> None:
    limit = limits.env_number("MEDGAN_MAX_PARAMS", 100_000_000, minimum=1)
    count = param_count(config.generator)
    if count > limit:
        raise ConfigError(f"model {config.id!r}: config.json describes {count:,} parameters, more than the "
                          f"{limit:,} allowed (MEDGAN_MAX_PARAMS); refusing to build it")


def expected_shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def check_state_dict(config: ModelConfig, net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    want = expected_shapes(net)
    got = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = [f"{k}: weights {got[k]} vs config {want[k]}" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    if missing or unexpected or wrong:
        parts = ([f"missing {missing[:4]}"] if missing else []) + \
                ([f"unexpected {unexpected[:4]}"] if unexpected else []) + wrong[:4]
        raise WeightsError(f"model {config.id!r}: weights do not match config.json ({'; '.join(parts)})")


def load_weights(folder: Path, model_id: str) -> dict[str, torch.Tensor]:
    """Read model.safetensors. Pickle formats are refused, never opened: unpickling runs foreign code."""
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise WeightsError(f"model {model_id!r}: weights are not safetensors ({', '.join(pickles)}); "
                               f"only {WEIGHTS_FILE} is loaded, pickle files never are")
        raise WeightsError(f"model {model_id!r}: {WEIGHTS_FILE} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"model {model_id!r}: {WEIGHTS_FILE} is corrupt or unreadable "
                           f"({type(exc).__name__}: {str(exc)[:160]})") from None


def save_model_folder(folder: str | Path, config: ModelConfig, net: torch.nn.Module) -> Path:
    """Write model.safetensors (with the config in its metadata) and config.json, atomically each."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "medgan_config": json.dumps(config.to_dict())})
    tmp.replace(folder / WEIGHTS_FILE)
    config.save(folder)
    return folder


__all__ = ["Generator", "latents", "to_uint8", "load_weights", "save_model_folder", "fold_batchnorm",
           "ConfigError", "WeightsError"]
