"""The Trainer: G, D, their optimisers and EMA, the random streams, one training step, the exported generator
and the checkpoint state.

Reproducibility: all training randomness comes from explicit torch.Generators (data order, latents,
augmentation) whose states are checkpointed with everything else, so on CPU N steps straight give the
same weights bit for bit as N/2 steps, stop, `--resume`, N/2 more.

Data parallel: under torchrun each rank takes its shard of every global batch from one shared index
stream, and gradients are averaged across ranks after each backward — what DistributedDataParallel does,
done explicitly because GAN training breaks DDP's one-forward-one-backward assumption (D runs in both the
D and the G step, and the R1 penalty needs double backward, which DDP does not support; StyleGAN2-ADA
syncs gradients the same way). The buffers each rank updates from its own rows (batch-norm statistics,
style's w_avg) are averaged after each step, so every rank holds the same model (tests/test_parallel.py).
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from medgan.config import STYLE_TRAINING_MAX_WIDTH, GeneratorConfig, ModelConfig
from medgan.generator import Generator, load_weights
from medgan.imaging import grid
from medgan.nets import DCGANGenerator, build_generator

from ..data.lazy import ShardImages
from . import checkpoint as ckpt
from .augment import AdaptiveP, diff_augment, hflip, parse_policy
from .config import TrainConfig, UsageError
from .discriminator import DCGANDiscriminator, dcgan_init, restore_discriminator
from .distributed import Dist
from .grow import lineage_totals, warm_state
from .losses import d_loss, g_loss
from .precision import Precision

# What train_step returns, in this order (one float64 vector, so all ranks sum it in one collective).
STATS = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "sign_sum", "count")
STAT = {name: i for i, name in enumerate(STATS)}
# Test-only (tests/test_parallel.py), deliberately not a flag: with this variable "1", every rank of a data-parallel
# run draws what one process draws for the same global batch (the single-process latent and augmentation streams,
# each rank keeping its rows; see Trainer.per_sample and Trainer.fake_batch), so N ranks must give one process's
# weights. It costs N times G's forward pass and the augmentation draws, so training never sets it.
GLOBAL_DRAWS_ENV = "MEDGAN_TEST_GLOBAL_DRAWS"


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


def generator_config(cfg: TrainConfig, channels: int, classes: list[str]) -> GeneratorConfig:
    common = dict(arch=cfg.arch, latent_dim=cfg.latent_dim, resolution=cfg.size, channels=channels,
                  base_width=cfg.base_width)
    if cfg.arch == "style":
        return GeneratorConfig(**common, max_width=STYLE_TRAINING_MAX_WIDTH, w_dim=cfg.w_dim,
                               mapping_layers=cfg.mapping_layers, classes=list(classes), condition=cfg.condition,
                               channel_base=cfg.channel_base,
                               detail_from=cfg.detail_from if 0 < cfg.detail_from <= cfg.size else 0,
                               widths=list(cfg.widths))
    return GeneratorConfig(**common)


def cumulative_cpu_s(training: dict[str, Any]) -> float:
    """Training CPU seconds of a model including the models it was warm-started from."""
    return lineage_totals(training)[1]


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
        # On the host (an array, or a dataset folder's ShardImages read on demand): each step gathers its batch
        # there and moves only that to the device, so the device never holds the dataset.
        self.images = images if isinstance(images, ShardImages) else np.ascontiguousarray(images)
        self.classes = list(classes or [])
        self.labels = torch.from_numpy(np.asarray(labels, np.int64)) if self.classes else None

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
        self.global_draws = self.d.world > 1 and os.environ.get(GLOBAL_DRAWS_ENV) == "1"
        self.draw_rank = 0 if self.global_draws else self.d.rank  # whose latent and augmentation streams
        self.gen_noise = torch.Generator().manual_seed(stream_seed(cfg.seed, 2, self.draw_rank))
        self.gen_aug = torch.Generator().manual_seed(stream_seed(cfg.seed, 3, self.draw_rank))
        self.stream = IndexStream(len(images), self.gen_perm, weights=self.class_weights() if cfg.balance_classes
                                  else None)
        self.ada = AdaptiveP(cfg.ada_target, cfg.ada_kimg, p=0.0) if cfg.augment and cfg.ada_target > 0 else None
        self.private = self.make_private(len(images))
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

    @property
    def opt_d_step(self) -> torch.optim.Optimizer:
        """What steps D: its Adam, or under DP Opacus' optimizer around it (clips and adds noise)."""
        return self.private.optimizer if self.private else self.opt_d

    def make_private(self, n: int) -> Any:
        """--dp-epsilon: D under DP-SGD (training.gan.dp); None otherwise."""
        if self.cfg.dp_epsilon <= 0:
            return None
        from .dp import Budget, DPError, PrivateDiscriminator

        if self.d.world > 1:
            raise UsageError("--dp-epsilon trains in one process (the accountant counts one Poisson-sampled batch "
                             "per step)")
        try:
            return PrivateDiscriminator(self.D, self.opt_d, Budget.plan(self.cfg, n), self.gen_perm)
        except DPError as exc:
            raise UsageError(str(exc)) from None

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
        state, copied, new = warm_state(self.G.state_dict(), load_weights(folder, source.id))
        if not copied:
            raise UsageError(f"--init-from {folder}: no tensor matches this generator's names and shapes")
        self.G.load_state_dict(state)
        if self.G_ema is not None:
            self.G_ema.load_state_dict(self.G.state_dict())
        prior = source.training or {}
        self.init_info = {"model": source.id, "resolution": source.generator.resolution,
                          "steps": lineage_totals(prior)[0],
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
        if not self.policy:
            return x
        return self.per_sample(lambda t: diff_augment(t, self.policy, self.gen_aug, self.aug_p), x)

    def per_sample(self, op: Any, x: torch.Tensor) -> torch.Tensor:
        """op(x) for a random op that treats each sample alone (flips, augmentation). Under GLOBAL_DRAWS_ENV (tests):
        op runs on the global batch, zeros in the other ranks' rows, and this rank keeps its rows, so it draws what
        one process draws."""
        if not self.global_draws:
            return op(x)
        n, lo, rest = len(x), self.d.rank * len(x), x.shape[1:]
        padded = torch.cat([x.new_zeros((lo, *rest)), x, x.new_zeros(((self.d.world - 1) * n - lo, *rest))])
        return op(padded)[lo:lo + n]

    def real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's real images and their labels (None when unconditional); Poisson-sampled under DP."""
        if self.private:
            idx = self.private.batch_indices()
        else:
            idx = self.stream.take(self.cfg.batch_size)
            idx = idx[self.d.rank * self.local_batch:(self.d.rank + 1) * self.local_batch]
        pixels = torch.from_numpy(self.images[idx.numpy()]).to(self.device)
        x = self.precision.layout(pixels.float() / 127.5 - 1)
        labels = self.labels[idx].to(self.device) if self.labels is not None else None
        return (self.per_sample(lambda t: hflip(t, self.gen_aug), x) if self.cfg.hflip else x), labels

    def fake_labels(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Fakes get the real batch's labels (the data's class frequencies); under DP uniformly drawn classes,
        since the real labels are data that only D's DP-SGD may see."""
        if labels is None or not self.private:
            return labels
        return torch.randint(len(self.classes), (n,), generator=self.gen_noise).to(self.device)

    def fake_batch(self, labels: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
        """G's images for this step (n of them: the real batch's size). Under GLOBAL_DRAWS_ENV (tests): G draws the
        global batch from the single-process stream (its batch-norm statistics and w_avg then those of the global
        batch, as in one process) and this rank keeps its rows; gradients still reach G from those rows only."""
        n = n or self.local_batch
        if not self.global_draws:
            return self.generate(labels, n)
        everyone = None if labels is None else torch.cat(self.gather(labels)).to(self.device)
        return self.generate(everyone, n * self.d.world)[self.d.rank * n:(self.d.rank + 1) * n]

    def generate(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """n images of G with grad. Style: random noise, and with probability style_mixing two latents crossed
        over at a random layer."""
        cfg = self.cfg
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
        self.average([p.grad for p in module.parameters() if p.grad is not None])

    def sync_buffers(self) -> None:
        """Each rank updates G's and D's buffers from its own rows (batch-norm running statistics, style's w_avg;
        spectral norm's vectors from the shared weights): their mean keeps every rank's copy the same."""
        self.average([b for net in (self.G, self.D) for b in net.buffers() if b.is_floating_point()])

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks, in one collective."""
        if self.d.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.d.world
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def train_step(self) -> torch.Tensor:
        """One D update then one G update; returns the STATS vector (loss_d, loss_g, d_real, d_fake, r1, sign_sum, count)
        (r1 as applied: the lazy penalty times r1_every on its steps, 0 between, so means are per step)."""
        cfg = self.cfg
        real, labels = self.real_batch()
        if len(real) == 0:   # an empty Poisson batch (DP): nothing to learn from; the accountant counted the step
            self.step += 1
            return torch.zeros(len(STATS), device=self.device)
        labels_fake = self.fake_labels(labels, len(real))
        amp = self.precision.autocast
        with amp(self.device):
            # reused for the G step (one G forward per iteration, as in PyTorch's DCGAN)
            fake = self.fake_batch(labels_fake, len(real))

        # D step (under DP: one per-sample gradient per real slice, its fake partner's added, then clipped)
        self.d_learns(True)
        self.opt_d_step.zero_grad(set_to_none=True)
        do_r1 = cfg.r1 > 0 and self.step % cfg.r1_every == 0
        real_in = real.detach().requires_grad_(do_r1)
        with amp(self.device, enabled=not do_r1):  # R1 differentiates this pass twice: fp32 and eager
            logits_real = (self.D if do_r1 else self.D_fast)(self.augment(real_in), labels).float()
        with amp(self.device):
            logits_fake = self.D_fast(self.augment(fake.detach()), labels_fake).float()
        loss_d = d_loss(cfg.loss, logits_real, logits_fake)
        penalty = torch.zeros((), device=self.device)
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), real_in, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean() * (cfg.r1 / 2)
            (loss_d + penalty * cfg.r1_every).backward()
        else:
            loss_d.backward()
        self.sync_grads(self.D)
        self.opt_d_step.step()

        # G step (D frozen: its gradients are not needed)
        self.d_learns(False)
        self.opt_g.zero_grad(set_to_none=True)
        with amp(self.device):
            logits_g = self.D_fast(self.augment(fake), labels_fake).float()
        loss_g = g_loss(cfg.loss, logits_g)
        loss_g.backward()
        self.sync_grads(self.G)
        self.opt_g.step()
        self.sync_buffers()  # before the EMA copies G's

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

    def d_learns(self, on: bool) -> None:
        """D's parameters take gradients (D step) or not (G step); under DP its per-sample hooks likewise, since
        G's gradient passes through D's layers."""
        self.D.requires_grad_(on)
        if self.private:
            (self.private.hooks.enable_hooks if on else self.private.hooks.disable_hooks)()

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
            self.gen_noise.manual_seed(stream_seed(self.cfg.seed, 2 + 1000 * meta["step"], self.draw_rank))
            self.gen_aug.manual_seed(stream_seed(self.cfg.seed, 3 + 1000 * meta["step"], self.draw_rank))
        if self.ada and meta.get("ada"):
            self.ada.load(meta["ada"])
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:  # the saved state carries the old rate; the config may anneal it
                group["lr"] = lr
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])
        self.cpu_elapsed = float(meta.get("cpu_elapsed", 0.0))
        self.commands, self.last = list(meta.get("commands", [])), dict(meta.get("last", {}))
        self.init_info = dict(meta.get("init_from") or {})
