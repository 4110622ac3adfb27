"""DCGAN networks built from a GeneratorConfig (Radford et al. 2016, as in PyTorch's examples)."""
from __future__ import annotations

import torch
from torch import nn

from .config import GeneratorConfig


class DCGANGenerator(nn.Module):
    """latent [n, latent_dim] -> image [n, channels, R, R] in [-1, 1].

    Parameter names follow `main.<i>.weight` like the PyTorch-examples DCGAN, so its weights load as-is.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


def generator_flops(cfg: GeneratorConfig) -> int:
    """Multiply-adds x2 of one forward pass (transposed convs dominate; BN/ReLU/Tanh ignored)."""
    flops, in_size, c_in = 0, 1, cfg.latent_dim
    for i, c_out in enumerate([*cfg.widths, cfg.channels]):
        flops += 2 * c_in * c_out * 16 * in_size * in_size  # every input pixel scatters a 4x4 kernel
        in_size, c_in = (4 if i == 0 else in_size * 2), c_out
    return flops


def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """The trainable/reference network for `cfg.arch` (new architectures register here)."""
    if cfg.arch == "style":
        from .stylenet import StyleGenerator
        return StyleGenerator(cfg)
    return DCGANGenerator(cfg)


def param_count(cfg: GeneratorConfig) -> int:
    """Parameters of build_generator(cfg), computed without building it."""
    if cfg.arch == "style":
        from .stylenet import style_param_count
        return style_param_count(cfg)
    chans = [cfg.latent_dim, *cfg.widths, cfg.channels]  # 4x4 transposed convs + BN affine
    return sum(c_in * c_out * 16 for c_in, c_out in zip(chans, chans[1:])) + 2 * sum(cfg.widths)


def flops(cfg: GeneratorConfig) -> int:
    if cfg.arch == "style":
        from .stylenet import style_flops
        return style_flops(cfg)
    return generator_flops(cfg)
