"""The baseline: PyTorch-examples DCGAN (github.com/pytorch/examples, dcgan/main.py), written plainly.

`nn.Sequential` of ConvTranspose2d / BatchNorm2d / ReLU / Tanh in eval mode, with the widths of a medgan
config, so medgan's `main.<i>.*` weights load into it unchanged. The training loop is the example's, on
in-memory tensors (no DataLoader), with its BCE loss, Adam(2e-4, betas 0.5/0.999) and one G forward per step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from medgan.config import GeneratorConfig
from medgan.generator import to_uint8


def reference_generator(cfg: GeneratorConfig) -> nn.Module:
    """netG of the example, generalised to medgan's widths (64²: ngf*8, *4, *2, *1)."""
    w = cfg.widths
    layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.latent_dim, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]),
                               nn.ReLU(True)]
    for a, b in zip(w, w[1:]):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(w[-1], cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
    return _Wrap(nn.Sequential(*layers))


class _Wrap(nn.Module):
    """Keeps the example's `main` attribute, so state-dict keys are `main.<i>.*` as in medgan."""

    def __init__(self, main: nn.Sequential):
        super().__init__()
        self.main = main

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def reference_discriminator(resolution: int, channels: int = 1, ndf: int = 64) -> nn.Module:
    """netD of the example: stride-2 convs, BN on all but the first, LeakyReLU(0.2), Sigmoid."""
    n = int(math.log2(resolution)) - 2
    layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for i in range(1, n):
        a, b = min(ndf * 2 ** (i - 1), 512), min(ndf * 2 ** i, 512)
        layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, inplace=True)]
    layers += [nn.Conv2d(min(ndf * 2 ** (n - 1), 512), 1, 4, 1, 0, bias=False), nn.Sigmoid()]
    return _Wrap(nn.Sequential(*layers))


def weights_init(m: nn.Module) -> None:
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def load_reference(cfg: GeneratorConfig, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    net = reference_generator(cfg)
    net.load_state_dict(state_dict, strict=False)  # num_batches_tracked is not saved by medgan
    return net.eval()


@torch.inference_mode()
def reference_generate(net: nn.Module, count: int, latent_dim: int):
    """What the baseline user-visible call does: torch.randn + forward + medgan's uint8 conversion."""
    return to_uint8(net(torch.randn(count, latent_dim, 1, 1)))


class ReferenceTrainer:
    """The example's training step on a uint8 image array [N, C, H, W]."""

    def __init__(self, images: torch.Tensor, cfg: GeneratorConfig, batch_size: int, ndf: int = 64, seed: int = 0):
        torch.manual_seed(seed)
        self.images, self.batch, self.nz = images, batch_size, cfg.latent_dim
        self.netG = reference_generator(cfg)
        self.netD = reference_discriminator(cfg.resolution, cfg.channels, ndf)
        self.netG.apply(weights_init)
        self.netD.apply(weights_init)
        self.criterion = nn.BCELoss()
        self.optD = torch.optim.Adam(self.netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self) -> float:
        idx = torch.randint(len(self.images), (self.batch,))
        real = self.images[idx].float() / 127.5 - 1
        label = torch.full((self.batch,), 1.0)
        self.netD.zero_grad()
        err_real = self.criterion(self.netD(real).view(-1), label)
        err_real.backward()
        fake = self.netG(torch.randn(self.batch, self.nz, 1, 1))
        label.fill_(0.0)
        err_fake = self.criterion(self.netD(fake.detach()).view(-1), label)
        err_fake.backward()
        self.optD.step()
        self.netG.zero_grad()
        label.fill_(1.0)
        err_g = self.criterion(self.netD(fake).view(-1), label)
        err_g.backward()
        self.optG.step()
        return float(err_g.detach())
