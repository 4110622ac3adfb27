"""Train a DCGAN generator on medical image slices and export a medgan model folder.

    python -m training.train --dataset brain-t1 --size 64 --out runs/brain-t1 --recipe small-data
    python -m training.train --dataset brain-t1 --arch style --condition level --out runs/brain-style
    python -m training.train --resume runs/brain-t1                       # continue exactly
    python -m training.train --resume runs/brain-t1 --lr-g 5e-4 --ema 0.999 # anneal once FID plateaus
    torchrun --nproc_per_node 2 -m training.train --dataset brain-t1 ...  # data-parallel

Two recipes (`--recipe dcgan | small-data`); every recipe setting is also a flag that overrides it.
One `TrainConfig` holds every option; it goes into each checkpoint and the exported config.json.

Reproducibility: all training randomness comes from explicit torch.Generators (data order, latents,
augmentation) whose states are checkpointed with everything else, so on CPU N steps straight give the
same weights bit for bit as N/2 steps, stop, `--resume`, N/2 more.

Data parallel: under torchrun each rank takes its shard of every global batch from one shared index
stream, and gradients are averaged across ranks after each backward — what DistributedDataParallel does,
done explicitly because GAN training breaks DDP's one-forward-one-backward assumption (D runs in both the
D and the G step, and the R1 penalty needs double backward, which DDP does not support; StyleGAN2-ADA
syncs gradients the same way). Only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from medgan.config import GeneratorConfig, ModelConfig
from medgan.errors import MedganError
from medgan.generator import Generator, load_weights, save_model_folder
from medgan.nets import DCGANGenerator, build_generator
from medgan.perf import cpu_name

from . import checkpoint as ckpt
from .augment import AdaptiveP, diff_augment, hflip, parse_policy
from .discriminator import DCGANDiscriminator, dcgan_init, restore_discriminator, save_discriminator
from .fidlog import TrainFID
from .precision import Precision
from .runlog import MetricsLog, fid_records, grid, plot_fid_curves, save_synthetic_png

LOSSES = ("bce", "ns", "hinge")
CONDITIONS = ("level", "plane", "contrast")  # = training.data.LABEL_KINDS (kept here: no import of data at start)
# What train_step returns, in this order (one float64 vector, so all ranks sum it in one collective).
STATS = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "sign_sum", "count")
STAT = {name: i for i, name in enumerate(STATS)}


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
    latent_dim: int = 100
    base_width: int = 32            # generator widths: base·8, ·4, ·2, ·1 at 64² (style: ·16 … ·1)
    d_width: int = 32
    w_dim: int = 256                # style only: w size, mapping depth, style-mixing probability
    mapping_layers: int = 2
    style_mixing: float = 0.5
    # style only: StyleGAN2's width schedule (min(channel_base // R, 256) channels at resolution R; 0 = the
    # base_width rule) and the resolution from which each doubling is a detail block (two 3x3 convs)
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
    amp: bool = True                # bf16 autocast where it is fast (CUDA; training.precision), never on CPU
    compile: bool = False           # torch.compile D's plain passes
    sample_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 50
    max_minutes: float = 0.0        # > 0: stop after this much training wall time (summed over resumes)
    # > 0: stop after this much process CPU time (summed over resumes): equal budgets on a shared machine
    max_cpu_minutes: float = 0.0
    out: str = ""
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


# --- distributed -----------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def pick_device(cfg: TrainConfig, d: Dist) -> torch.device:
    if cfg.device:
        return torch.device(cfg.device)
    return torch.device(f"cuda:{d.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def stream_seed(seed: int, stream: int, rank: int = 0) -> int:
    """Independent 63-bit seeds per (seed, stream, rank)."""
    return int(np.random.SeedSequence([seed, stream, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class IndexStream:
    """Endless shuffled indices: fresh seeded permutations appended as needed, so no image is dropped and
    a dataset smaller than a batch still works. Its state (generator + remaining buffer) is checkpointed."""

    def __init__(self, n: int, gen: torch.Generator, weights: torch.Tensor | None = None):
        self.n, self.gen, self.weights = n, gen, weights
        self.buffer = torch.empty(0, dtype=torch.int64)

    def take(self, count: int) -> torch.Tensor:
        if self.weights is not None:  # balanced: independent draws by weight (with replacement)
            return torch.multinomial(self.weights, count, replacement=True, generator=self.gen)
        while len(self.buffer) < count:
            self.buffer = torch.cat([self.buffer, torch.randperm(self.n, generator=self.gen)])
        out, self.buffer = self.buffer[:count], self.buffer[count:]
        return out


# --- losses ----------------------------------------------------------------------------------------
def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -fake.mean()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    return F.softplus(-fake).mean()


@torch.no_grad()
def recalibrate_bn(net: DCGANGenerator, batches: int = 16, batch: int = 64, seed: int = 1234) -> DCGANGenerator:
    """Recompute BN running statistics as exact averages over fixed latents (inference uses eval-mode
    BN, and running stats tracked for G's moving weights do not fit EMA weights). Touches no global RNG."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    net.train()
    for _ in range(batches):
        net(torch.randn(batch, net.cfg.latent_dim, generator=gen).to(device))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return net.eval()


# --- the trainer -----------------------------------------------------------------------------------
def generator_config(cfg: TrainConfig, channels: int, classes: list[str]) -> GeneratorConfig:
    common = dict(arch=cfg.arch, latent_dim=cfg.latent_dim, resolution=cfg.size, channels=channels,
                  base_width=cfg.base_width)
    if cfg.arch == "style":
        return GeneratorConfig(**common, max_width=256, w_dim=cfg.w_dim, mapping_layers=cfg.mapping_layers,
                               classes=list(classes), condition=cfg.condition, channel_base=cfg.channel_base,
                               detail_from=cfg.detail_from if 0 < cfg.detail_from <= cfg.size else 0,
                               widths=list(cfg.widths))
    return GeneratorConfig(**common)


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


def cumulative_cpu_s(training: dict[str, Any]) -> float:
    """Training CPU seconds of a model including the models it was warm-started from."""
    return float(training.get("cpu_time_s", 0.0)) + float(training.get("init_from", {}).get("cpu_time_s", 0.0))


@torch.no_grad()
def exact_w_avg(net: torch.nn.Module, samples: int = 4096, seed: int = 1234) -> torch.nn.Module:
    """Replace the running mean of w with the exact mean over fixed latents, per class (truncation's centre)."""
    gen = torch.Generator().manual_seed(seed)
    mapping = net.mapping
    for c in range(mapping.w_avg.shape[0]):
        z = torch.randn(samples, net.cfg.latent_dim, generator=gen)
        labels = torch.full((samples,), c, dtype=torch.long) if mapping.num_classes else None
        mapping.w_avg[c] = mapping(z, labels).mean(0)
    return net.eval()


class Trainer:
    def __init__(self, cfg: TrainConfig, images: np.ndarray, d: Dist | None = None,
                 device: torch.device | None = None, labels: np.ndarray | None = None,
                 classes: list[str] | None = None):
        self.cfg, self.d = cfg, d or Dist()
        self.device = device or torch.device("cpu")
        if cfg.batch_size % self.d.world:
            raise UsageError(f"--batch-size {cfg.batch_size} is not divisible by {self.d.world} processes")
        self.local_batch = cfg.batch_size // self.d.world
        self.policy = parse_policy(cfg.augment_policy) if cfg.augment else []
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self.classes = list(classes or [])
        self.labels = torch.from_numpy(np.asarray(labels, np.int64)).to(self.device) if self.classes else None

        torch.manual_seed(cfg.seed)  # same init on every rank; broadcast below anyway
        self.gcfg = generator_config(cfg, images.shape[1], self.classes)
        self.G = build_generator(self.gcfg)
        if cfg.arch == "dcgan":
            dcgan_init(self.G)
        self.D = DCGANDiscriminator(cfg.size, images.shape[1], cfg.d_width, batchnorm=cfg.d_batchnorm,
                                    spectral_norm=cfg.spectral_norm, num_classes=len(self.classes))
        self.precision = Precision.for_device(self.device, cfg.amp, cfg.compile)
        self.precision.apply_globals()
        self.G.to(self.device).train()
        self.D = self.precision.prepare(self.D.to(self.device).train())
        self.D_fast = self.precision.compiled(self.D)   # D's passes without double backward
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False) if cfg.ema > 0 else None
        betas = (cfg.beta1, cfg.beta2)
        # Fused Adam: one kernel instead of a dozen elementwise passes (about 10x cheaper per step on CPU).
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas, fused=True)
        # Lazy R1 rides along in the normal D step (scaled by r1_every), so no extra optimizer steps and
        # no StyleGAN2-style lr/beta adjustment.
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas, fused=True)
        self.gen_perm = torch.Generator().manual_seed(stream_seed(cfg.seed, 1))      # shared by all ranks
        self.gen_noise = torch.Generator().manual_seed(stream_seed(cfg.seed, 2, self.d.rank))
        self.gen_aug = torch.Generator().manual_seed(stream_seed(cfg.seed, 3, self.d.rank))
        self.stream = IndexStream(len(images), self.gen_perm, weights=self.class_weights() if cfg.balance_classes
                                  else None)
        self.ada = AdaptiveP(cfg.ada_target, cfg.ada_kimg, p=0.0) if cfg.augment and cfg.ada_target > 0 else None
        self.step = 0
        self.elapsed = 0.0          # training wall time, summed over resumes
        self.cpu_elapsed = 0.0      # process CPU time of training, summed over resumes
        self.commands: list[str] = []
        self.last: dict[str, float] = {}
        self.init_info: dict[str, Any] = {}  # what warm_start copied from (kept across resumes)
        if self.d.world > 1:
            for t in [*self.G.state_dict().values(), *self.D.state_dict().values()]:
                dist.broadcast(t, 0)
            if self.G_ema is not None:
                self.G_ema.load_state_dict(self.G.state_dict())

    def class_weights(self) -> torch.Tensor:
        """Per image 1/(images of its class), so each class is drawn equally often."""
        if self.labels is None:
            raise UsageError("--balance-classes needs --condition (labels to balance)")
        counts = torch.bincount(self.labels.cpu(), minlength=len(self.classes)).double()
        return (1.0 / counts)[self.labels.cpu()]

    def warm_start(self, folder: str | Path) -> dict[str, Any]:
        """Start G and its EMA from an exported model folder: every tensor whose name and shape match is
        copied. Layers the source lacks (a grown resolution) keep their init except their toRGB weights, which
        start at zero, so the first images are the source's, up-sampled (the skip outputs sum)."""
        folder = Path(folder)
        source = ModelConfig.load(folder)
        source_classes = list(source.generator.classes)
        if source.generator.arch != self.cfg.arch or bool(source_classes) != bool(self.classes):
            raise UsageError(f"--init-from {folder}: its generator ({source.generator.arch}, classes "
                             f"{source_classes}) does not match this run ({self.cfg.arch}, {self.classes})")
        own = self.G.state_dict()
        tensors = load_weights(folder, source.id)
        copied = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
        new = sorted(k for k in own if k not in copied)
        if not copied:
            raise UsageError(f"--init-from {folder}: no tensor matches this generator's names and shapes")
        start = {k: torch.zeros_like(own[k]) for k in new if "to_image" in k.split(".") and k.endswith(".weight")}
        self.G.load_state_dict({**own, **copied, **start})
        if self.G_ema is not None:
            self.G_ema.load_state_dict(self.G.state_dict())
        prior = source.training or {}
        self.init_info = {"model": source.id, "resolution": source.generator.resolution,
                          "steps": prior.get("steps", 0) + prior.get("init_from", {}).get("steps", 0),
                          "cpu_time_s": cumulative_cpu_s(prior), "copied": len(copied), "new": new,
                          "discriminator": restore_discriminator(folder, self.D),
                          # other classes (brain levels -> MR contrasts): class tensors of another shape start new
                          **({"classes": source_classes} if source_classes != self.classes else {})}
        return self.init_info

    # .. one step ..................................................................................
    @property
    def aug_p(self) -> float:
        return self.ada.p if self.ada else self.cfg.augment_p

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy, self.gen_aug, self.aug_p) if self.policy else x

    def real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's real images and their labels (None when unconditional)."""
        idx = self.stream.take(self.cfg.batch_size)
        idx = idx[self.d.rank * self.local_batch:(self.d.rank + 1) * self.local_batch].to(self.device)
        x = self.precision.layout(self.images[idx].float() / 127.5 - 1)
        labels = self.labels[idx] if self.labels is not None else None
        return (hflip(x, self.gen_aug) if self.cfg.hflip else x), labels

    def fake_batch(self, labels: torch.Tensor | None) -> torch.Tensor:
        """G's images for this step. Fakes get the real batch's labels (the data's class frequencies). Style:
        random noise, and with probability style_mixing two latents crossed over at a random layer."""
        cfg, n = self.cfg, self.local_batch
        z = torch.randn(n, cfg.latent_dim, generator=self.gen_noise).to(self.device)
        if cfg.arch != "style":
            return self.G(z)
        layers = self.G.num_ws
        ws = self.G.mapping(z, labels, update_avg=True).unsqueeze(1).repeat(1, layers, 1)
        if cfg.style_mixing > 0:
            z2 = torch.randn(n, cfg.latent_dim, generator=self.gen_noise).to(self.device)
            cut = torch.randint(1, layers, (n,), generator=self.gen_noise).to(self.device)
            mixed = (torch.rand(n, generator=self.gen_noise) < cfg.style_mixing).to(self.device)
            second = (torch.arange(layers, device=self.device)[None] >= cut[:, None]) & mixed[:, None]
            ws = torch.where(second[..., None], self.G.mapping(z2, labels).unsqueeze(1), ws)
        return self.G.synthesis(ws, noise=self.gen_noise)

    def sync_grads(self, module: torch.nn.Module) -> None:
        if self.d.world == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.d.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def train_step(self) -> torch.Tensor:
        """One D update then one G update; returns the STATS vector (loss_d, loss_g, d_real, d_fake, r1, sign_sum, count)
        (r1 as applied: the lazy penalty times r1_every on its steps, 0 between, so means are per step)."""
        cfg = self.cfg
        real, labels = self.real_batch()
        amp = self.precision.autocast
        with amp(self.device):
            fake = self.fake_batch(labels)  # reused for the G step (one G forward per iteration, as in PyTorch's DCGAN)

        # D step
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        do_r1 = cfg.r1 > 0 and self.step % cfg.r1_every == 0
        real_in = real.detach().requires_grad_(do_r1)
        with amp(self.device, enabled=not do_r1):  # R1 differentiates this pass twice: fp32 and eager
            logits_real = (self.D if do_r1 else self.D_fast)(self.augment(real_in), labels).float()
        with amp(self.device):
            logits_fake = self.D_fast(self.augment(fake.detach()), labels).float()
        loss_d = d_loss(cfg.loss, logits_real, logits_fake)
        penalty = torch.zeros((), device=self.device)
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), real_in, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean() * (cfg.r1 / 2)
            (loss_d + penalty * cfg.r1_every).backward()
        else:
            loss_d.backward()
        self.sync_grads(self.D)
        self.opt_d.step()

        # G step (D frozen: its gradients are not needed)
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with amp(self.device):
            logits_g = self.D_fast(self.augment(fake), labels).float()
        loss_g = g_loss(cfg.loss, logits_g)
        loss_g.backward()
        self.sync_grads(self.G)
        self.opt_g.step()

        if self.G_ema is not None:
            t = self.step
            beta = min(cfg.ema, (1 + t) / (10 + t)) if cfg.ema_warmup else cfg.ema
            with torch.no_grad():
                for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                    pe.lerp_(p, 1 - beta)
                for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
                    be.copy_(b)
        self.step += 1
        return self.stats(loss_d, loss_g, logits_real, logits_fake, penalty, do_r1)

    def stats(self, loss_d, loss_g, logits_real, logits_fake, penalty, do_r1: bool) -> torch.Tensor:
        """The STATS vector of one step."""
        lr = logits_real.detach()
        return torch.stack([loss_d.detach(), loss_g.detach(), lr.mean(), logits_fake.detach().mean(),
                            penalty.detach() * (self.cfg.r1_every if do_r1 else 0), torch.sign(lr).sum(),
                            torch.tensor(float(lr.numel()), device=lr.device)])

    # .. sampling and export .......................................................................
    def export_net(self) -> torch.nn.Module:
        """The generator users get: EMA weights when used, eval mode, on CPU; DCGAN: BN statistics recomputed,
        style: the exact mean w per class."""
        net = copy.deepcopy(self.G_ema if self.G_ema is not None else self.G).cpu()
        if self.cfg.arch == "style":
            return exact_w_avg(net)
        return recalibrate_bn(net) if self.cfg.bn_recalibrate else net.eval()

    def export_generator(self) -> Generator:
        """The exported network behind medgan's own Generator: sampling exactly as users will."""
        config = ModelConfig(id=self.cfg.model_id or "training-run", generator=self.gcfg)
        return Generator(config, self.export_net().state_dict(), device="cpu")

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        return grid(self.export_generator().generate(64, seed=self.cfg.sample_seed, output_type="np"))

    # .. checkpoint state ...........................................................................
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to continue exactly. Collective under DDP: every rank must call it."""
        tensors = {**ckpt.prefixed(self.G.state_dict(), "G"), **ckpt.prefixed(self.D.state_dict(), "D")}
        if self.G_ema is not None:
            tensors.update(ckpt.prefixed(self.G_ema.state_dict(), "G_ema"))
        tg, mg = ckpt.flatten_optimizer(self.opt_g.state_dict(), "opt_g")
        td, md = ckpt.flatten_optimizer(self.opt_d.state_dict(), "opt_d")
        tr, mr = ckpt.global_rng_state()
        tensors.update({**tg, **td, **tr, "gen.perm": self.gen_perm.get_state(), "stream.buffer": self.stream.buffer})
        for name, gen in (("noise", self.gen_noise), ("aug", self.gen_aug)):
            for rank, st in enumerate(self.gather(gen.get_state())):
                tensors[f"gen.{name}.{rank}"] = st
        meta = {"config": asdict(self.cfg), "step": self.step, "elapsed": self.elapsed,
                "cpu_elapsed": self.cpu_elapsed, "world": self.d.world,
                "opt_g": mg, "opt_d": md, "rng": mr, "ada": self.ada.state() if self.ada else None,
                "commands": self.commands, "last": self.last, "torch": torch.__version__,
                "init_from": self.init_info}
        return tensors, meta

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.d.world == 1:
            return [t]
        comm = "cuda" if dist.get_backend() == "nccl" else "cpu"
        parts = [torch.empty_like(t, device=comm) for _ in range(self.d.world)]
        dist.all_gather(parts, t.to(comm))
        return [p.cpu() for p in parts]

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.G.load_state_dict(ckpt.subdict(tensors, "G"))
        self.D.load_state_dict(ckpt.subdict(tensors, "D"))
        if self.G_ema is not None:
            self.G_ema.load_state_dict(ckpt.subdict(tensors, "G_ema"))
        self.opt_g.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["opt_g"], "opt_g"))
        self.opt_d.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["opt_d"], "opt_d"))
        self.precision.match_layout(self.opt_d)
        ckpt.set_global_rng_state(tensors, meta["rng"])
        self.gen_perm.set_state(tensors["gen.perm"])
        self.stream.buffer = tensors["stream.buffer"].clone()
        if meta["world"] == self.d.world:
            self.gen_noise.set_state(tensors[f"gen.noise.{self.d.rank}"])
            self.gen_aug.set_state(tensors[f"gen.aug.{self.d.rank}"])
        else:  # a different process count cannot replay the same streams; start fresh ones, still seeded
            self.gen_noise.manual_seed(stream_seed(self.cfg.seed, 2 + 1000 * meta["step"], self.d.rank))
            self.gen_aug.manual_seed(stream_seed(self.cfg.seed, 3 + 1000 * meta["step"], self.d.rank))
        if self.ada and meta.get("ada"):
            self.ada.load(meta["ada"])
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:  # the saved state carries the old rate; the config may anneal it
                group["lr"] = lr
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])
        self.cpu_elapsed = float(meta.get("cpu_elapsed", 0.0))
        self.commands, self.last = list(meta.get("commands", [])), dict(meta.get("last", {}))
        self.init_info = dict(meta.get("init_from") or {})


# --- data ------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    images: np.ndarray                  # uint8 [n, 1, N, N]
    info: dict[str, Any]                # provenance for config.json and the card
    labels: np.ndarray | None = None    # int64 [n] class per image when conditional
    classes: list[str] = field(default_factory=list)


def load_training_data(cfg: TrainConfig) -> TrainingData:
    """The training split's images, provenance and (with --condition) labels."""
    source = cfg.data or cfg.dataset
    if not source:
        raise UsageError("give --dataset NAME or --data FILE")
    if cfg.data and not Path(cfg.data).exists():
        raise UsageError(f"dataset file not found: {cfg.data}")
    from .data import BUILTIN_DATASETS, load_dataset
    try:
        dataset = load_dataset(source, cfg.size, axes=tuple(cfg.axes))
        train = dataset.train()
    except (MedganError, OSError, ValueError, KeyError, LookupError) as exc:
        raise UsageError(f"cannot load dataset {source!r}: {exc}") from None
    images = np.asarray(train.images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise UsageError(f"dataset {source!r} has no training images (shape {images.shape})")
    if images.dtype != np.uint8 or images.shape[2:] != (cfg.size, cfg.size):
        raise UsageError(f"dataset {source!r} gave {images.dtype} images of shape {images.shape[1:]}, "
                         f"expected uint8 [1, {cfg.size}, {cfg.size}]")
    data = TrainingData(images, data_provenance(dataset.meta, train, images, BUILTIN_DATASETS))
    if cfg.condition:
        try:
            labels, classes = train.labels(cfg.condition)
        except MedganError as exc:
            raise UsageError(str(exc)) from None
        if (labels < 0).any():
            raise UsageError(f"--condition {cfg.condition}: {int((labels < 0).sum())} training images have no "
                             f"{cfg.condition} label (native 2-D images have no level)")
        data.labels, data.classes = labels, classes
        data.info["condition"] = {"kind": cfg.condition, "classes": classes,
                                  "counts": np.bincount(labels, minlength=len(classes)).tolist()}
    return data


def data_provenance(meta: dict[str, Any], train: Any, images: np.ndarray,
                    builtins: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The dataset facts a model card needs (name, licences, sources, split), without the bulky lists."""
    name = meta.get("dataset", "")
    spec = builtins.get(name, {})
    sources = [{k: s.get(k) for k in ("id", "subject", "slices", "licence") if k in s} for s in meta.get("sources", [])]
    licences = sorted({s["licence"] for s in sources if s.get("licence")})
    counts = meta.get("counts", {})
    info = {"name": name, "description": spec.get("description", ""), "modality": spec.get("modality", ""),
            "licences": licences, "licence_url": spec.get("licence_url", ""), "sources": sources,
            "split": meta.get("split"), "split_rule": meta.get("split_rule"), "warnings": meta.get("warnings", []),
            "size": meta.get("size"), "axes": meta.get("axes"), "subjects": counts.get("subjects"),
            "train_slices": int(images.shape[0]),
            "train_subjects": len(set(np.asarray(train.subject).tolist())),
            "heldout_slices": counts.get("heldout"), "skipped_files": len(meta.get("skipped", [])),
            "public": meta.get("public", name in builtins), "pseudonymised": meta.get("pseudonymised"),
            "sha256": hashlib.sha256(images.tobytes()).hexdigest()}
    return {k: v for k, v in info.items() if v not in (None, "", [])}


def hardware(d: Dist, device: torch.device) -> dict[str, Any]:
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "processes": d.world,
            "device": str(device.type), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def export_model(trainer: Trainer, folder: Path, data_info: dict[str, Any], hw: dict[str, Any],
                 run_dir: Path) -> Path:
    """Write a medgan model folder: weights, config.json, samples.png, loss.png, README.md card, and the
    discriminator (for a later --init-from; training.discriminator.DISCRIMINATOR_FILE)."""
    from .card import write_card

    cfg = trainer.cfg
    net = trainer.export_net()
    model_id = cfg.model_id or folder.name
    training = {"recipe": cfg.recipe, "command": trainer.commands[0] if trainer.commands else "",
                "resumed_with": trainer.commands[1:], "steps": trainer.step,
                "images_seen": trainer.step * cfg.batch_size, "wall_time_s": round(trainer.elapsed, 1),
                "cpu_time_s": round(trainer.cpu_elapsed, 1),
                "hardware": hw, "final_losses": trainer.last, "ema": cfg.ema > 0, "config": asdict(cfg)}
    if trainer.init_info:
        training["init_from"] = trainer.init_info
        training["cpu_time_total_s"] = round(cumulative_cpu_s(training), 1)
    curve = fid_records(run_dir)
    if curve:  # the cheap FID's quality-vs-CPU-time curve (training CPU minutes, FID on fid_images samples)
        training["fid_curve"] = [{"step": r["step"], "cpu_min": round(r["cpu_s"] / 60, 2), "fid": r["fid"],
                                  "images": r.get("fid_images")} for r in curve]
    axes = data_info.get("axes") or cfg.axes
    plane = cfg.plane or ({0: "sagittal", 1: "coronal", 2: "axial"}.get(axes[0], "") if len(axes) == 1 else "mixed")
    config = ModelConfig(id=model_id, title=cfg.title or model_id, modality=cfg.modality or data_info.get("modality", ""),
                         organ=cfg.organ or data_info.get("organ", ""), plane=plane,
                         description=cfg.description, generator=trainer.gcfg, training_data=data_info,
                         license="mit", training=training, extra={"architecture": ARCH_NAMES[cfg.arch]})
    save_model_folder(folder, config, net)
    save_discriminator(folder, trainer.D, {"model_id": model_id, "step": trainer.step, "d_width": cfg.d_width,
                                           "spectral_norm": cfg.spectral_norm, "d_batchnorm": cfg.d_batchnorm,
                                           "classes": trainer.classes})
    # The sample grid comes from the saved folder through medgan itself: exactly what users will see.
    images = Generator.from_folder(folder, device="cpu").generate(64, seed=cfg.sample_seed, output_type="np")
    save_synthetic_png(folder / "samples.png", grid(images), {"model_id": model_id, "seed": str(cfg.sample_seed)})
    MetricsLog(run_dir).plot(folder / "loss.png", title=model_id)
    plot_fid_curves(folder / "fid.png", {ARCH_NAMES[cfg.arch]: curve}, title=f"{model_id}: quality vs CPU time")
    write_card(folder)
    return folder


# --- CLI -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # absent options stay absent, so recipe values are only overridden on purpose
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                argument_default=S)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="built-in dataset name (see training.data)")
    data.add_argument("--data", help="dataset file (.npz) made by training.data")
    data.add_argument("--size", type=int, help="image size (32, 64, 128, 256); default 64")
    data.add_argument("--axes", type=int, nargs="+", help="volume axes to slice (default 2 = axial)")
    rec = p.add_argument_group("recipe (each flag overrides the recipe)")
    rec.add_argument("--recipe", choices=sorted(RECIPES), help="default small-data")
    rec.add_argument("--arch", choices=sorted(ARCH_DEFAULTS), help="generator architecture (default dcgan)")
    rec.add_argument("--condition", help="label kind to condition on: level, plane or contrast (default: "
                                         "unconditional)")
    rec.add_argument("--balance-classes", action=argparse.BooleanOptionalAction,
                     help="draw each class equally often (rare contrasts), not in proportion to the data")
    rec.add_argument("--style-mixing", type=float, help="style only: probability of mixing two latents")
    rec.add_argument("--loss", choices=LOSSES)
    rec.add_argument("--augment", action=argparse.BooleanOptionalAction, help="DiffAugment")
    rec.add_argument("--augment-policy", help="comma list of color, translation, cutout")
    rec.add_argument("--augment-p", type=float, help="probability of each augmentation (fixed)")
    rec.add_argument("--ada-target", type=float, help="adaptive p targeting E[sign(D(real))] (e.g. 0.6)")
    rec.add_argument("--ada-kimg", type=float)
    rec.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="random left-right flips of reals")
    rec.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, help="spectral norm in D")
    rec.add_argument("--d-batchnorm", action=argparse.BooleanOptionalAction, help="BatchNorm in D")
    rec.add_argument("--r1", type=float, metavar="GAMMA", help="R1 penalty weight (0 = off)")
    rec.add_argument("--r1-every", type=int)
    rec.add_argument("--ema", type=float, metavar="DECAY", help="EMA generator decay (0 = off)")
    rec.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction)
    rec.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction)
    opt = p.add_argument_group("optimisation and architecture")
    for name, kind in (("steps", int), ("batch-size", int), ("lr-g", float), ("lr-d", float), ("beta1", float),
                       ("beta2", float), ("latent-dim", int), ("base-width", int), ("d-width", int),
                       ("w-dim", int), ("mapping-layers", int), ("channel-base", int), ("detail-from", int)):
        opt.add_argument(f"--{name}", type=kind)
    run = p.add_argument_group("run")
    run.add_argument("--out", help="run directory (default runs/<dataset>-<recipe>-<size>)")
    run.add_argument("--resume", help="run directory or checkpoint file to continue")
    run.add_argument("--init-from", metavar="MODEL_FOLDER",
                     help="warm-start G from an exported model (conditional if this run is; other classes start "
                     "their class tensors new; a larger --size grows it); D continues from the folder's "
                     "discriminator.safetensors when it fits, else starts fresh, which sets a trained G back: "
                     "to continue a run use --resume")
    for name, kind in (("seed", int), ("sample-seed", int), ("threads", int), ("sample-every", int),
                       ("ckpt-every", int), ("log-every", int), ("max-minutes", float), ("max-cpu-minutes", float),
                       ("fid-every", int), ("fid-images", int)):
        run.add_argument(f"--{name}", type=kind)
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction,
                     help="bf16 autocast for G and D forward passes on CUDA (default on; never used on CPU)")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction,
                     help="torch.compile the discriminator's passes that need no double backward")
    meta = p.add_argument_group("export")
    meta.add_argument("--export", metavar="FOLDER", help="model folder to write (default <out>/model)")
    for name in ("model-id", "title", "modality", "organ", "plane", "description"):
        meta.add_argument(f"--{name}")
    return p


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
    values = {**RECIPES[recipe], **ARCH_DEFAULTS.get(arch, {}), **given}
    values.setdefault("recipe", recipe)
    if not values.get("out"):
        name = Path(values.get("data") or values.get("dataset") or "data").stem
        values["out"] = f"runs/{name}-{recipe}-{values.get('size', TrainConfig.size)}"
    return TrainConfig(**values)


def check_config(cfg: TrainConfig) -> None:
    problems = []
    if cfg.size not in (32, 64, 128, 256):
        problems.append(f"--size must be 32, 64, 128 or 256, got {cfg.size}")
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
    if cfg.condition and cfg.condition not in CONDITIONS:
        problems.append(f"--condition must be one of {', '.join(CONDITIONS)}, got {cfg.condition!r}")
    if cfg.balance_classes and not cfg.condition:
        problems.append("--balance-classes needs --condition (labels to balance)")
    if cfg.condition and cfg.arch != "style":
        problems.append("--condition needs --arch style (DCGAN models are unconditional)")
    if cfg.fid_every < 0 or cfg.fid_images < 2 or not 0 <= cfg.style_mixing <= 1:
        problems.append("--fid-every must be >= 0, --fid-images >= 2, --style-mixing in [0, 1]")
    try:
        parse_policy(cfg.augment_policy)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise UsageError("; ".join(problems))


def command_line(argv: list[str], d: Dist) -> str:
    launcher = f"torchrun --nproc_per_node {d.world} -m training.train" if d.world > 1 else "python -m training.train"
    return f"{launcher} {shlex.join(argv)}".strip()


class StopFlag:
    """SIGTERM / Ctrl-C set a flag; the loop checkpoints and exits at the end of the current step.
    A second Ctrl-C falls back to the default (immediate) behaviour."""

    def __init__(self) -> None:
        self.set = False
        self.signal = ""

    def install(self) -> dict[int, Any]:
        """Install the handlers; returns the previous ones (for `restore`)."""
        def handler(signum: int, frame: Any) -> None:
            if self.set and signum == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self.set, self.signal = True, signal.Signals(signum).name

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def restore(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(cfg: TrainConfig, argv: list[str], resume: str | None = None, images: np.ndarray | None = None,
        data_info: dict[str, Any] | None = None, stop: StopFlag | None = None,
        labels: np.ndarray | None = None, classes: list[str] | None = None) -> Trainer:
    """Train (or continue) as configured; returns the trainer. `images` (+ `labels`, `classes`) bypass
    training.data (tests)."""
    d = Dist.from_env()
    device = pick_device(cfg, d)
    if d.world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // d.local_world))
    stop = stop or StopFlag()
    if images is None:
        data = load_training_data(cfg)
        images, data_info, labels, classes = data.images, data.info, data.labels, data.classes
    if cfg.condition and not classes:
        raise UsageError(f"--condition {cfg.condition} needs labelled data")
    data_info = {"train_slices": len(images), **(data_info or {})}
    data_info.setdefault("sha256", hashlib.sha256(images.tobytes()).hexdigest())
    run_dir = Path(cfg.out)
    if not resume:
        cfg = adopt_architecture(cfg)
    trainer = Trainer(cfg, images, d, device, labels=labels, classes=classes)
    log = MetricsLog(run_dir)
    if resume:
        tensors, meta = ckpt.load_checkpoint(resume)
        if meta.get("data_sha256") and meta["data_sha256"] != data_info.get("sha256"):
            raise UsageError("the training data differ from the data this checkpoint was trained on")
        trainer.load_state(tensors, meta)
        if d.main:
            log.truncate_after(trainer.step)
    elif cfg.init_from:
        info = trainer.warm_start(cfg.init_from)
        print(f"warm start from {info['model']}: {info['copied']} tensors copied, {len(info['new'])} new; "
              f"discriminator {info['discriminator']}", flush=True)
        if info["discriminator"].startswith("fresh") and trainer.policy and not trainer.ada and cfg.augment_p >= 0.5:
            # Measured on brain-t1 (docs/experiments.md): behind p=1 augmentation a fresh D stayed at chance
            # (logits within ±0.01) against a trained G for 825 steps; with ADA it separated within 100.
            print(f"note: a fresh discriminator behind fixed --augment-p {cfg.augment_p:g} may never leave chance "
                  "against a trained generator; --ada-target 0.6 starts p at 0 so it can learn", flush=True)
    trainer.commands.append(command_line(argv, d))
    hw = {**hardware(d, device), "precision": trainer.precision.describe()}
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    def save(reason: str) -> None:
        tensors, meta = trainer.state()  # collective: all ranks
        meta["data_sha256"] = data_info.get("sha256")
        if d.main:
            path = ckpt.save_checkpoint(run_dir / ckpt.FILENAME, tensors, meta)
            log.plot(run_dir / "loss.png", title=run_dir.name)
            tqdm.write(f"checkpoint ({reason}): step {trainer.step} -> {path}", file=sys.stdout)
            sys.stdout.flush()

    # Handlers only around the loop: before it there is nothing to save, and a signal must just end us.
    previous = stop.install() if threading.current_thread() is threading.main_thread() else {}
    try:
        reason = train_loop(trainer, cfg, d, stop, log, save, run_dir)
        save(reason)
    finally:
        StopFlag.restore(previous)
    if not stop.set and d.main:
        folder = export_model(trainer, Path(cfg.export or run_dir / "model"), data_info, hw, run_dir)
        print(f"exported {trainer.step} steps ({trainer.elapsed / 60:.1f} min, {reason}) -> {folder}", flush=True)
    elif d.main:
        print(f"{reason} at step {trainer.step}; continue with: python -m training.train --resume {run_dir}",
              flush=True)
    if d.world > 1:
        dist.barrier()
    return trainer


def train_loop(trainer: Trainer, cfg: TrainConfig, d: Dist, stop: StopFlag, log: MetricsLog, save: Any,
               run_dir: Path) -> str:
    """Steps until done, a signal or the time limit; returns why it stopped."""
    bar = tqdm(total=cfg.steps, initial=trainer.step, disable=not d.main, dynamic_ncols=True, unit="step",
               file=sys.stderr)
    sums = torch.zeros(len(STATS), dtype=torch.float64)
    fid_logger = TrainFID(trainer.images.cpu().numpy()[:, 0], cfg.fid_images) if cfg.fid_every and d.main else None
    n_sums, began = 0, time.perf_counter() - trainer.elapsed
    cpu_began = time.process_time() - trainer.cpu_elapsed
    reason = "done"
    step_time = step_cpu = 0.0  # pure training time in the log interval (sampling, checkpoints excluded)
    while trainer.step < cfg.steps:
        t0, c0 = time.perf_counter(), time.process_time()
        stats = trainer.train_step().double()
        trainer.elapsed = time.perf_counter() - began
        trainer.cpu_elapsed = time.process_time() - cpu_began
        timeup = (cfg.max_minutes > 0 and trainer.elapsed >= cfg.max_minutes * 60) or \
            (cfg.max_cpu_minutes > 0 and trainer.cpu_elapsed >= cfg.max_cpu_minutes * 60)
        # One small collective per step: stop flags, ADA statistics and losses, summed over ranks.
        flags = torch.cat([torch.tensor([float(stop.set), float(timeup)], dtype=torch.float64, device=stats.device),
                           stats])
        if d.world > 1:
            dist.all_reduce(flags)
        flags = flags.cpu()
        step_time += time.perf_counter() - t0
        step_cpu += time.process_time() - c0
        stats = flags[2:]
        sums += stats
        n_sums += 1
        if trainer.ada is not None:
            trainer.ada.observe(float(stats[STAT["sign_sum"]]), int(stats[STAT["count"]]), trainer.step, cfg.batch_size)
        bar.update(1)
        if trainer.step % cfg.log_every == 0 or trainer.step == cfg.steps or flags[:2].any():
            mean = dict(zip(STATS, (sums / (n_sums * d.world)).tolist()))
            rate = n_sums * cfg.batch_size / max(step_time, 1e-9)
            cpu_rate = n_sums * cfg.batch_size / d.world / max(step_cpu, 1e-9)  # per process
            trainer.last = {k: round(mean[k], 5) for k in ("loss_d", "loss_g", "d_real", "d_fake")}
            if d.main:
                log.append({"step": trainer.step, "kimg": round(trainer.step * cfg.batch_size / 1000, 3),
                            "time_s": round(trainer.elapsed, 2), "cpu_s": round(trainer.cpu_elapsed, 2),
                            **trainer.last, "r1": round(mean["r1"], 6),
                            "aug_p": round(trainer.aug_p if trainer.policy else 0.0, 4),
                            "rt": round(float(sums[STAT["sign_sum"]] / max(float(sums[STAT["count"]]), 1.0)), 4),
                            "img_per_s": round(rate, 1),
                            "img_per_cpu_s": round(cpu_rate, 2)})
                bar.set_postfix(D=f"{mean['loss_d']:.3f}", G=f"{mean['loss_g']:.3f}", img_s=f"{rate:.0f}", refresh=False)
            sums.zero_()
            n_sums, step_time, step_cpu = 0, 0.0, 0.0
        if d.main and trainer.step % cfg.sample_every == 0:
            save_synthetic_png(run_dir / "samples" / f"synthetic_step{trainer.step:07d}.png", trainer.sample_grid(),
                               {"step": str(trainer.step)})
        if fid_logger and (trainer.step % cfg.fid_every == 0 or flags[:2].any() or trainer.step == cfg.steps):
            # the FID's own time does not count as training time (nor against the time limits)
            wall, cpu = log_fid(trainer, fid_logger, log, run_dir)
            began, cpu_began = began + wall, cpu_began + cpu
        if flags[0] > 0:
            reason = f"stopped by {stop.signal or 'signal on another rank'}"
            break
        if flags[1] > 0:
            reason = "time limit"
            break
        if trainer.step % cfg.ckpt_every == 0 and trainer.step < cfg.steps:
            save("periodic")
    bar.close()
    return reason


def log_fid(trainer: Trainer, fid_logger: TrainFID, log: MetricsLog, run_dir: Path) -> tuple[float, float]:
    """Append a cheap-FID record and redraw fid.png; returns the (wall, CPU) seconds it took."""
    t0, c0 = time.perf_counter(), time.process_time()
    generator = trainer.export_generator()
    log.append({"step": trainer.step, "kimg": round(trainer.step * trainer.cfg.batch_size / 1000, 3),
                "time_s": round(trainer.elapsed, 2), "cpu_s": round(trainer.cpu_elapsed, 2),
                **fid_logger(generator)})
    # The exported generator at each curve point, so any point can be evaluated in full later (ablations
    # at equal CPU time).
    save_model_folder(run_dir / "snapshots" / f"step{trainer.step:07d}", generator.config, generator.reference_net)
    plot_fid_curves(run_dir / "fid.png", {trainer.cfg.arch: fid_records(run_dir)}, title=run_dir.name)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    try:
        resume = args.pop("resume", None)
        resumed_cfg = None
        if resume:
            try:
                path = ckpt.resolve(resume)
                meta = ckpt.load_checkpoint(path)[1]
                if meta.get("kind") == "discriminator":
                    raise UsageError(f"{resume} holds only an exported discriminator: continue from its model "
                                     "folder with --init-from, or --resume a run folder")
                resumed_cfg = meta["config"]
            except ckpt.CheckpointError as exc:
                raise UsageError(str(exc)) from None
            args.setdefault("out", str(path.parent))
            resume = str(path)
        cfg = make_config(args, resumed_cfg)
        check_config(cfg)
        run(cfg, argv, resume=resume)
    except (UsageError, ckpt.CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
