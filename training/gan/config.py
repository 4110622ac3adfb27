"""The training configuration: every option in one TrainConfig, the recipes and per-architecture defaults that
fill it, and the checks of a configuration (what may change on --resume, what combinations are refused)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgan.config import RESOLUTIONS, GeneratorConfig, ModelConfig

from ..data.labels import LABEL_KINDS
from .augment import parse_policy
from .dp import DP_RECIPE

LOSSES = ("bce", "ns", "hinge")


@dataclass
class TrainConfig:
    # data
    dataset: str = ""               # registry name (--dataset) ...
    data: str = ""                  # ... or a file (--data), both read by training.data.load_dataset
    size: int = 64
    axes: list[int] = field(default_factory=lambda: [2])
    condition: str = ""             # label kind to condition on (training.data.LABEL_KINDS); "" = unconditional
    # draw real images with probability 1/(size of their class): a rare class (2 contrast-enhanced scans
    # beside 700 T1 slices) is then seen as often as a common one, by D and, through the labels, by G
    balance_classes: bool = False
    arch: str = "dcgan"             # generator: dcgan | style (medgan.config.ARCHS)
    # recipe (the defaults are the small-data recipe)
    recipe: str = "small-data"
    loss: str = "ns"                # bce (classic DCGAN) | ns (non-saturating, = bce in logit form) | hinge
    augment: bool = True            # DiffAugment on everything D sees
    augment_policy: str = "color,translation,cutout"
    augment_p: float = 1.0          # per-sample probability of each op (fixed unless ada_target > 0)
    ada_target: float = 0.0         # > 0: adapt p to keep E[sign(D(real))] at this (ADA uses 0.6)
    ada_kimg: float = 100.0         # images (thousands) for p to move 0 -> 1
    hflip: bool = True              # mirror real images left-right at random
    spectral_norm: bool = True      # on every D conv
    d_batchnorm: bool = False
    r1: float = 0.2                 # R1 gamma on real images (0 = off)
    r1_every: int = 16              # lazy R1: every N steps, scaled by N
    ema: float = 0.999              # EMA generator decay (0 = off)
    ema_warmup: bool = True         # decay min(ema, (1+t)/(10+t)) so early EMA is not stuck at init
    bn_recalibrate: bool = True     # recompute G's BN statistics for the exported weights
    # optimisation
    steps: int = 10000
    batch_size: int = 64            # global: split across ranks
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.99
    # architecture
    latent_dim: int = GeneratorConfig.latent_dim
    base_width: int = 32            # generator widths: base·8, ·4, ·2, ·1 at 64² (style: ·16 … ·1)
    d_width: int = 32
    w_dim: int = GeneratorConfig.w_dim  # style only: w size, mapping depth, style-mixing probability
    mapping_layers: int = GeneratorConfig.mapping_layers
    style_mixing: float = 0.5
    # style only: StyleGAN2's width schedule (min(channel_base // R, STYLE_TRAINING_MAX_WIDTH) channels at
    # resolution R; 0 = the base_width rule) and the resolution from which each doubling is a detail block (two
    # 3x3 convs)
    channel_base: int = 0
    detail_from: int = 128
    widths: list[int] = field(default_factory=list)  # G's widths; [] = from the rule. Set by adopt_architecture.
    # cheap FID during training: every N steps, fid_images EMA samples vs cached features of the training
    # slices (0 = off); its CPU time is logged apart and not counted against --max-cpu-minutes
    fid_every: int = 0
    fid_images: int = 500
    # run control
    seed: int = 0
    sample_seed: int = 0            # fixed latents medgan.generator.latents(sample_seed, 64, nz)
    threads: int = 0                # 0 = os.cpu_count() (divided among local ranks)
    device: str = ""                # "" = cuda when present, else cpu
    amp: bool = True                # bf16 autocast where it is fast (CUDA; training.gan.precision), never on CPU
    compile: bool = False           # torch.compile D's plain passes
    sample_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 50
    max_minutes: float = 0.0        # > 0: stop after this much training wall time (summed over resumes)
    # > 0: stop after this much process CPU time (summed over resumes): equal budgets on a shared machine
    max_cpu_minutes: float = 0.0
    out: str = ""
    # differential privacy (training.gan.dp): > 0 trains D with DP-SGD to this ε at dp_delta; the noise multiplier
    # comes from the budget and --steps unless given; per-sample gradients are clipped to dp_max_grad_norm
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    dp_noise_multiplier: float = 0.0
    dp_max_grad_norm: float = 1.0
    # warm start: G (and its EMA) from an exported model folder; tensors match by name and shape, so a
    # 128² run can grow from a 64² model whose widths it shares (see Trainer.warm_start). D continues from the
    # folder's discriminator.safetensors when that fits (same size, width and classes), else starts fresh.
    init_from: str = ""
    export: str = ""                # model folder; "" = <out>/model
    # model metadata for the export
    model_id: str = ""
    title: str = ""
    modality: str = ""
    organ: str = ""
    plane: str = ""
    description: str = ""


# Per-architecture defaults on top of the recipe (explicit flags still win). The style generator uses
# equalised learning rate (unit-scale weights), hence StyleGAN2's larger G rate and beta1 = 0.
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "dcgan": {},
    "style": dict(lr_g=0.002, lr_d=0.0004, beta1=0.0, beta2=0.99, latent_dim=128, base_width=16, ema=0.995),
}
RECIPES: dict[str, dict[str, Any]] = {
    # Radford et al. 2016 as in PyTorch's example: BCE, Adam(2e-4, 0.5), batch 128, BN in D, nothing else.
    "dcgan": dict(loss="bce", augment=False, ada_target=0.0, hflip=False, spectral_norm=False, d_batchnorm=True,
                  r1=0.0, ema=0.0, batch_size=128, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
                  base_width=64, d_width=64),
    # Few hundred to few thousand slices: augment everything D sees, bound D (SN + R1), average G (EMA).
    "small-data": dict(loss="ns", augment=True, hflip=True, spectral_norm=True, d_batchnorm=False, r1=0.2,
                       ema=0.999, batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.99,
                       base_width=32, d_width=32),
}
ARCH_NAMES = {"dcgan": "DCGAN", "style": "StyleGAN2-lite (style-based, modulated convs, skip outputs)"}
# Options that may change when resuming; anything else would make the resumed run a different run.
RESUMABLE = {"steps", "fid_every", "fid_images", "max_minutes", "max_cpu_minutes", "sample_every", "ckpt_every", "log_every", "threads", "device", "out",
             "export", "model_id", "title", "modality", "organ", "plane", "description",
             # The schedule, not the model: a resumed run may anneal (lower learning rates, a longer EMA) once
             # its FID plateaus. The resume command that did so is kept in config.json's resumed_with.
             "lr_g", "lr_d", "ema",
             # how the device runs it, not what it computes: a run may move between a GPU and the CPU
             "amp", "compile"}


class UsageError(Exception):
    """Bad command-line input or data: reported in one line, exit status 2."""


def make_config(args: dict[str, Any], resumed: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < recipe < explicit flags; on resume the checkpoint's config < run-control flags."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in args.items() if k in known}
    if resumed is not None:
        base = {k: v for k, v in resumed.items() if k in known}
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE and base.get(k) != v)
        if changed:
            raise UsageError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} when "
                             "resuming (start a new run instead)")
        if (base.get("ema", 0) > 0) != (given.get("ema", base.get("ema", 0)) > 0):
            raise UsageError("--ema can be changed when resuming, but not switched on or off (start a new run)")
        return TrainConfig(**{**base, **given})
    recipe = given.get("recipe", TrainConfig.recipe)
    arch = given.get("arch", TrainConfig.arch)
    private = DP_RECIPE if given.get("dp_epsilon", 0) > 0 else {}   # what DP-SGD needs instead (training.gan.dp)
    values = {**RECIPES[recipe], **ARCH_DEFAULTS.get(arch, {}), **private, **given}
    values.setdefault("recipe", recipe)
    if not values.get("out"):
        # named after what the user chose, never the data file's name: config.json records this folder
        name = values.get("dataset") or values.get("model_id") or Path(values.get("export") or "custom").name
        values["out"] = f"runs/{name}-{recipe}-{values.get('size', TrainConfig.size)}"
    return TrainConfig(**values)


def adopt_architecture(cfg: TrainConfig) -> TrainConfig:
    """With --init-from a model of this run's size and arch (e.g. one made by training.grow), G is built as that
    model is (its widths and detail blocks, whatever the flags' defaults say), so every tensor finds its place.
    Recorded in the run's config, so --resume rebuilds the same network."""
    if not cfg.init_from or cfg.arch != "style":
        return cfg
    source = ModelConfig.load(cfg.init_from).generator
    if source.arch != cfg.arch or source.resolution != cfg.size:
        return cfg
    return dataclasses.replace(cfg, widths=list(source.widths), detail_from=source.detail_from,
                               channel_base=source.channel_base, latent_dim=source.latent_dim,
                               base_width=source.base_width, w_dim=source.w_dim,
                               mapping_layers=source.mapping_layers)


def check_config(cfg: TrainConfig) -> None:
    problems = []
    if cfg.size not in RESOLUTIONS:
        problems.append(f"--size must be one of {', '.join(map(str, RESOLUTIONS))}, got {cfg.size}")
    if cfg.loss not in LOSSES:
        problems.append(f"--loss must be one of {LOSSES}")
    for name in ("steps", "batch_size", "latent_dim", "base_width", "d_width", "sample_every", "ckpt_every",
                 "log_every", "r1_every"):
        if getattr(cfg, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= cfg.ema < 1:
        problems.append("--ema must be in [0, 1)")
    if min(cfg.r1, cfg.max_minutes, cfg.max_cpu_minutes) < 0 or not 0 <= cfg.augment_p <= 1:
        problems.append("--r1, --max-minutes and --max-cpu-minutes must be >= 0, --augment-p in [0, 1]")
    if cfg.arch not in ARCH_DEFAULTS:
        problems.append(f"--arch must be one of {', '.join(ARCH_DEFAULTS)}")
    if cfg.condition and cfg.condition not in LABEL_KINDS:
        problems.append(f"--condition must be one of {', '.join(LABEL_KINDS)}, got {cfg.condition!r}")
    if cfg.balance_classes and not cfg.condition:
        problems.append("--balance-classes needs --condition (labels to balance)")
    if cfg.condition and cfg.arch != "style":
        problems.append("--condition needs --arch style (DCGAN models are unconditional)")
    if cfg.fid_every < 0 or cfg.fid_images < 2 or not 0 <= cfg.style_mixing <= 1:
        problems.append("--fid-every must be >= 0, --fid-images >= 2, --style-mixing in [0, 1]")
    problems += dp_problems(cfg)
    try:
        parse_policy(cfg.augment_policy)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise UsageError("; ".join(problems))


def dp_problems(cfg: TrainConfig) -> list[str]:
    """--dp-epsilon settings, and the recipe options DP-SGD cannot run with (training/gan/dp.py says why)."""
    if cfg.dp_epsilon <= 0:
        given = [f for f in ("dp_delta", "dp_noise_multiplier") if getattr(cfg, f)]
        return [f"--{given[0].replace('_', '-')} needs --dp-epsilon"] if given else []
    clash = [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k, v in DP_RECIPE.items() if getattr(cfg, k) != v]
    clash += [f"--{k.replace('_', '-')}" for k in ("init_from", "compile") if getattr(cfg, k)]
    problems = [f"--dp-epsilon cannot train with {', '.join(clash)}: DP-SGD needs per-sample gradients of D "
                "(no R1, spectral norm or batch norm), Poisson-sampled batches (no class balancing), no statistic "
                "of the data outside it (no ADA), and a discriminator that never saw the data (no --init-from); "
                "training/gan/dp.py says why"] if clash else []
    if not 0 < cfg.dp_delta < 1 or cfg.dp_max_grad_norm <= 0 or cfg.dp_noise_multiplier < 0:
        problems.append("--dp-epsilon needs --dp-delta in (0, 1) (e.g. 1e-5), --dp-max-grad-norm > 0 and "
                        "--dp-noise-multiplier >= 0")
    return problems
