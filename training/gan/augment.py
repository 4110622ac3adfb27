"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for grayscale images in [-1, 1].

The same random transforms are applied to real and fake images before D, in both the D and the G step,
so D never sees un-augmented images and G is not pushed to produce augmented-looking ones (no leaking).
Every op is differentiable w.r.t. the pixels. Fills use -1 (black): medical images have a black
background, and DiffAugment's zero fill would be mid-grey here.

Each op is applied per sample with probability `p` (1.0 = plain DiffAugment); `AdaptiveP` tunes p the
ADA way (Karras et al. 2020) from r_t = E[sign(D(real))]. Randomness comes from an explicit CPU
torch.Generator so a run is reproducible and its state can be checkpointed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
FILL = -1.0


def parse_policy(policy: str) -> list[str]:
    ops = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in ops if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {', '.join(POLICIES)}")
    return ops


def _rand(gen: torch.Generator, *shape: int, device: torch.device) -> torch.Tensor:
    return torch.rand(*shape, generator=gen).to(device)


def _randint(gen: torch.Generator, low: int, high: int, n: int, device: torch.device) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=gen).to(device)


def _apply_mask(gen: torch.Generator, n: int, p: float, device: torch.device) -> torch.Tensor:
    """1 where a sample gets the op; always drawn so the RNG stream does not depend on p."""
    return (_rand(gen, n, device=device) < p).float()


def color(x: torch.Tensor, gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Brightness shift in [-0.5, 0.5) and contrast scale in [0.5, 1.5) (DiffAugment's ranges)."""
    n, dev = x.shape[0], x.device
    on = _apply_mask(gen, n, p, dev).view(n, 1, 1, 1)
    bright = (_rand(gen, n, 1, 1, 1, device=dev) - 0.5) * on
    contrast = 1 + (_rand(gen, n, 1, 1, 1, device=dev) - 0.5) * on
    x = x + bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def translation(x: torch.Tensor, gen: torch.Generator, p: float = 1.0, ratio: float = 0.125) -> torch.Tensor:
    """Integer shift of up to ratio·size pixels in each direction; uncovered pixels become black."""
    n, _, h, w = x.shape
    dev = x.device
    on = _apply_mask(gen, n, p, dev).long()
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(gen, -sh, sh + 1, n, dev).view(n, 1, 1) * on.view(n, 1, 1)
    tx = _randint(gen, -sw, sw + 1, n, dev).view(n, 1, 1) * on.view(n, 1, 1)
    gb, gy, gx = torch.meshgrid(torch.arange(n, device=dev), torch.arange(h, device=dev),
                                torch.arange(w, device=dev), indexing="ij")
    # Pad by one fill pixel and clamp: every out-of-range index lands on the fill border.
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=FILL)
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, gen: torch.Generator, p: float = 1.0, ratio: float = 0.5) -> torch.Tensor:
    """Blacks out one random square of ratio·size per sample (centre anywhere, clipped at the edges)."""
    n, _, h, w = x.shape
    dev = x.device
    on = _apply_mask(gen, n, p, dev).view(n, 1, 1)
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(gen, 0, h + (1 - ch % 2), n, dev).view(n, 1, 1)
    ox = _randint(gen, 0, w + (1 - cw % 2), n, dev).view(n, 1, 1)
    y0, x0 = oy - ch // 2, ox - cw // 2
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    cut = (inside.float() * on).unsqueeze(1)
    return x * (1 - cut) + FILL * cut


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: list[str], gen: torch.Generator, p: float = 1.0) -> torch.Tensor:
    for name in policy:
        x = OPS[name](x, gen, p)
    return x


def hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror half the batch left-right (real data only: brains are roughly L/R symmetric)."""
    flip = _rand(gen, x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


class AdaptiveP:
    """ADA's controller: every `interval` steps, move p by ±(images seen)/(speed_kimg·1000) toward
    keeping r_t = E[sign(D(real))] at `target` (D over-confident on reals -> more augmentation)."""

    def __init__(self, target: float = 0.6, speed_kimg: float = 100.0, interval: int = 4, p: float = 0.0):
        self.target, self.speed_kimg, self.interval, self.p = target, speed_kimg, interval, p
        self.sign_sum, self.count, self.rt = 0.0, 0, 0.0

    def observe(self, sign_sum: float, count: int, step: int, batch_size: int) -> None:
        """Add one step's sum of sign(D(real)) over `count` logits; every `interval` steps, adjust p."""
        self.sign_sum += sign_sum
        self.count += count
        if step % self.interval == 0:
            self.update(batch_size)

    def update(self, batch_size: int, sign_sum: float | None = None, count: int | None = None) -> None:
        """Adjust p from the accumulated stats (pass all-reduced sums under DDP)."""
        sign_sum = self.sign_sum if sign_sum is None else sign_sum
        count = self.count if count is None else count
        if count:
            self.rt = sign_sum / count
            step = batch_size * self.interval / (self.speed_kimg * 1000)
            self.p = float(min(max(self.p + step * (1 if self.rt > self.target else -1), 0.0), 1.0))
        self.sign_sum, self.count = 0.0, 0

    def state(self) -> dict[str, float]:
        return {"p": self.p, "rt": self.rt, "sign_sum": self.sign_sum, "count": self.count}

    def load(self, state: dict[str, float]) -> None:
        self.p, self.rt = float(state["p"]), float(state["rt"])
        self.sign_sum, self.count = float(state["sign_sum"]), int(state["count"])
