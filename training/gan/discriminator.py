"""DCGAN discriminator (training only: inference never needs it, so it stays out of medgan/)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, prefixed, save_checkpoint, subdict

# Saved beside an exported generator so that `--init-from` can continue with the discriminator that grew with
# it: a model folder outlives its run folder (the full checkpoint), and a fresh D sets a trained G back, or never
# learns at all against a good one (on brain-t1-style-64 it stayed at chance for 800 steps; docs/experiments.md).
# Training state only: medgan never reads it, `training.push` never uploads it.
DISCRIMINATOR_FILE = "discriminator.safetensors"


def discriminator_widths(resolution: int, base_width: int, max_width: int = 512) -> list[int]:
    """Channels after each stride-2 conv, mirroring the generator: base, 2·base, … down to 4x4."""
    n = int(math.log2(resolution)) - 2
    return [min(base_width * 2 ** i, max_width) for i in range(n)]


class DCGANDiscriminator(nn.Module):
    """image [n, C, R, R] in [-1, 1] -> logit [n].

    Classic DCGAN: stride-2 4x4 convs with LeakyReLU(0.2), BatchNorm on every block but the first, and a
    final 4x4 valid conv to one logit. `spectral_norm` wraps every conv (then BatchNorm is usually off:
    SN already bounds D, and BN's batch coupling interferes with gradient penalties).
    """

    def __init__(self, resolution: int = 64, channels: int = 1, base_width: int = 64, *,
                 batchnorm: bool = True, spectral_norm: bool = False, max_width: int = 512, num_classes: int = 0):
        super().__init__()
        widths = discriminator_widths(resolution, base_width, max_width)

        def conv(c_in: int, c_out: int, stride: int, padding: int) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, 4, stride, padding, bias=not batchnorm)
            dcgan_init(layer)  # before spectral norm, so its power iteration starts from these weights
            return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = []
        c_in = channels
        for i, w in enumerate(widths):
            layers.append(conv(c_in, w, 2, 1))
            if batchnorm and i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = w
        layers.append(conv(c_in, 1, 1, 0))
        self.main = nn.Sequential(*layers)
        dcgan_init(self, convs=False)
        # Conditional: projection discriminator (Miyato & Koyama 2018): logit += <embed(y), sum of 4x4 features>.
        self.embed = None
        if num_classes:
            embed = nn.Embedding(num_classes, c_in)
            nn.init.normal_(embed.weight, 0.0, 0.02)
            self.embed = nn.utils.parametrizations.spectral_norm(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.main(x).view(-1)
        features = self.main[:-1](x)
        projection = (self.embed(labels) * features.sum(dim=(2, 3))).sum(dim=1)
        return self.main[-1](features).view(-1) + projection


def dcgan_init(module: nn.Module, convs: bool = True) -> None:
    """DCGAN weight init: N(0, 0.02) convs, N(1, 0.02) BN scales, zero biases (Radford et al. 2016)."""
    for m in module.modules():
        if convs and isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def save_discriminator(folder: str | Path, D: nn.Module, meta: dict[str, Any]) -> Path:
    """Write D's state dict to folder/discriminator.safetensors (safetensors, atomic), `meta` as JSON."""
    return save_checkpoint(Path(folder) / DISCRIMINATOR_FILE, prefixed(D.state_dict(), "D"),
                           {**meta, "kind": "discriminator"})


def restore_discriminator(folder: str | Path, D: nn.Module) -> str:
    """Load folder/discriminator.safetensors into D when its tensors match D's names and shapes; returns what
    happened ("restored (step N)", or "fresh: <why>"), for config.json and the card."""
    path = Path(folder) / DISCRIMINATOR_FILE
    if not path.is_file():
        return f"fresh: the source has no {DISCRIMINATOR_FILE}"
    try:
        tensors, meta = load_checkpoint(path)
    except CheckpointError as exc:
        return f"fresh: {exc}"
    saved, own = subdict(tensors, "D"), D.state_dict()
    if meta.get("kind") != "discriminator" or saved.keys() != own.keys() or any(
            saved[k].shape != own[k].shape for k in own):
        return "fresh: the saved discriminator's tensors do not fit this one (another --size, --d-width or class set)"
    D.load_state_dict(saved)
    return f"restored (step {meta.get('step', '?')})"
