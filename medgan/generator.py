"""Weights + config -> `Generator.generate(count, seed)`.

Determinism: image i's latent comes from its own RNG stream seeded by (seed, i), so the same (model,
seed) always gives the same pixels and count=4 returns the first 4 images of count=16.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import explore, limits
from .config import ModelConfig
from .errors import ConfigError, InvalidArgumentError, WeightsError
from .files import atomic_path
from .latent import latents, sample_labels, to_uint8  # noqa: F401 (re-exported)
from .fastnet import FastDCGAN
from .nets import DCGANGenerator, build_generator, param_count
from .validation import MAX_SEED, as_int, check_count, check_label, check_seed, check_truncation

WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy")
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


def inference_net(net: torch.nn.Module, device: torch.device, optimize: bool = True,
                  dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The module generate() runs. DCGAN, optimize: BatchNorm folded, then on CPU (fp32) the FastDCGAN layout,
    on GPU channels-last convs (cuDNN's NHWC kernels). Style: FastStyle (folded gains, one style matmul).
    Otherwise the plain module as trained."""
    if net.cfg.arch == "style":
        if not optimize:
            return copy.deepcopy(net).eval().to(device, dtype)
        from .stylefast import FastStyle
        return FastStyle(copy.deepcopy(net).float().cpu()).to(device, dtype)
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
    """Timings of recent calls, for the app's performance panel (medgan.perf)."""
    history: list[tuple[float, int, float]] = field(default_factory=list)  # (unix time, count, seconds)


class Generator:
    """A loaded generator (any `generator.arch`). Thread-safe; one forward pass at a time per model."""

    def __init__(self, config: ModelConfig, state_dict: dict[str, torch.Tensor], *,
                 device: torch.device | str | None = None, optimize: bool = True, revision: str = "",
                 source: str = "local", precision: str | None = None):
        self.config = config
        self.revision = revision
        self.source = source
        self.device = torch.device(device) if device is not None else default_device()
        check_size(config)  # before allocating: config.json is untrusted and could ask for terabytes
        net = build_generator(config.generator)
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

    @property
    def arch(self) -> str:
        return self.config.generator.arch

    @property
    def classes(self) -> list[str]:
        """Class names of a conditional model (label i = classes[i]); [] when unconditional."""
        return list(self.config.generator.classes)

    def labels(self, count: int, seed: int, *, start: int = 0, label: object = None) -> np.ndarray:
        """The class index of images start..start+count-1 (what generate() uses); [] when unconditional."""
        count, seed = check_count(count), check_seed(seed)
        return self.class_indices(count, seed, as_int("start", start), check_label(label, self.classes, self.id))

    def class_indices(self, count: int, seed: int, start: int, fixed: int | None) -> np.ndarray:
        """`labels` for checked arguments: `fixed`, a class index, or None to draw one per image from (seed, i)."""
        if not self.classes:
            return np.empty(0, dtype=np.int64)
        if fixed is not None:
            return np.full(count, fixed, dtype=np.int64)
        return sample_labels(seed, count, len(self.classes), start)

    def class_names(self, indices: np.ndarray) -> list[str]:
        return [self.classes[int(i)] for i in indices] if self.classes else []

    # --- sampling ----------------------------------------------------------------------------------
    def generate(self, count: int = 16, seed: int = 0, *, start: int = 0, truncation: float = 1.0,
                 label: object = None, output_type: Literal["pil", "np", "pt"] = "pil"):
        """Images start..start+count-1 of `seed`: PIL images, a uint8 array [n, H, W], or a float tensor.

        Image i depends only on (seed, i, truncation, label). truncation ψ in [0, 2]: style models pull w
        towards the class's mean w (w_avg + ψ·(w − w_avg)); DCGAN models scale z by ψ. label: a class name or
        index of a conditional model; None draws a class per image from (seed, i) (see `labels`)."""
        count, seed = check_count(count), check_seed(seed)
        start = as_int("start", start)
        if not 0 <= start <= MAX_SEED:
            raise InvalidArgumentError(f"start must be between 0 and 2**63-1, got {start}"[:80])
        check_output_type(output_type)
        truncation = check_truncation(truncation)
        label = check_label(label, self.classes, self.id)
        began = time.perf_counter()
        result = self._generate(count, seed, start, output_type == "pt", truncation, label)
        self._record(count, time.perf_counter() - began)
        return convert_output(result, output_type)

    def interpolate(self, seed_a: int, seed_b: int, frames: int = 8, *, index_a: int = 0, index_b: int = 0,
                    truncation: float = 1.0, label: object = None, output_type: str = "pil", return_meta: bool = False):
        """`frames` images from image index_a of seed_a to image index_b of seed_b: linear in w for style
        models, spherical in z for DCGAN. The first and last frames are exactly those generate() gives.
        return_meta=True also returns a dict (t of each frame, seeds, classes, truncation)."""
        check_output_type(output_type, allow_pt=False)
        began = time.perf_counter()
        images, meta = explore.interpolate(self, seed_a, seed_b, frames, index_a=index_a, index_b=index_b,
                                   truncation=truncation, label=label)
        self._record(len(images), time.perf_counter() - began)
        return (convert_output(images, output_type), meta) if return_meta else convert_output(images, output_type)

    def mix(self, row_seeds, col_seeds, *, crossover: int | None = None, truncation: float = 1.0,
            label: object = None, output_type: str = "pil", return_meta: bool = False):
        """Style mixing (style models only): a rows x columns grid; cell (r, c) takes the coarse styles (layers
        below `crossover`, default the middle layer) from row seed r and the fine ones from column seed c.
        np: uint8 [rows, cols, H, W]; pil: a list of rows of images."""
        check_output_type(output_type, allow_pt=False)
        began = time.perf_counter()
        grid, meta = explore.mix(self, row_seeds, col_seeds, crossover=crossover, truncation=truncation, label=label)
        self._record(grid.shape[0] * grid.shape[1], time.perf_counter() - began)
        result = [convert_output(row, "pil") for row in grid] if output_type == "pil" else grid
        return (result, meta) if return_meta else result

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None, truncation: float) -> torch.Tensor:
        """One tile through the inference module: z [n, latent_dim] on the device, labels [n] or None."""
        if self.arch == "style":
            return self.net(z, labels, truncation)
        if truncation != 1.0:  # DCGAN: truncation scales z towards the mode of its prior
            z = z * truncation
        return self.net(z.view(z.shape[0], -1, 1, 1))

    def _generate(self, count: int, seed: int, start: int, floats: bool, truncation: float = 1.0,
                  label: int | None = None) -> np.ndarray | torch.Tensor:
        """Tile by tile (see TILE), into one preallocated output."""
        tile, dim = self.tile, self.config.generator.latent_dim
        first = start - start % tile
        total = -(-(start + count - first) // tile) * tile
        z = torch.from_numpy(latents(seed, total, dim, first))
        labels = torch.from_numpy(self.class_indices(total, seed, first, label)).to(self.device) \
            if self.classes else None
        dtype = PRECISIONS[self.precision]
        out: np.ndarray | torch.Tensor | None = None
        with self.exclusive():
            for t0 in range(first, start + count, tile):
                rows = slice(t0 - first, t0 - first + tile)
                images = self.forward(z[rows].to(self.device, dtype), labels[rows] if labels is not None else None,
                                      truncation)
                lo, hi = max(start, t0), min(start + count, t0 + tile)
                images = images[lo - t0:hi - t0]
                part = images.float().cpu() if floats else to_uint8(images)
                if out is None:
                    shape = (count, *part.shape[1:])
                    out = torch.empty(shape) if floats else np.empty(shape, dtype=np.uint8)
                out[lo - start:hi - start] = part
        return out

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this while running `self.net`: one forward pass at a time per model (the fast layouts keep
        per-call buffers), in inference mode."""
        with self._lock, torch.inference_mode():
            yield

    def _record(self, count: int, seconds: float) -> None:
        self.stats.history = (self.stats.history + [(time.time(), count, seconds)])[-100:]


def check_output_type(output_type: object, allow_pt: bool = True) -> None:
    allowed = OUTPUT_TYPES if allow_pt else tuple(t for t in OUTPUT_TYPES if t != "pt")
    if not isinstance(output_type, str) or output_type not in allowed:
        raise InvalidArgumentError(f"output_type must be one of {', '.join(allowed)}, got {str(output_type)[:40]!r}")


def convert_output(result: np.ndarray | torch.Tensor, output_type: str):
    """uint8 [n, H, W(, C)] -> list of PIL images for "pil"; arrays/tensors pass through."""
    if output_type == "pil":
        mode = "L" if result.ndim == 3 else "RGB"
        return [Image.fromarray(a, mode=mode) for a in result]
    return result


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
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "medgan_config": json.dumps(config.to_dict())})
    config.save(folder)
    return folder


__all__ = ["Generator", "latents", "to_uint8", "load_weights", "save_model_folder", "fold_batchnorm",
           "ConfigError", "WeightsError"]
