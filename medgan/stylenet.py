"""A compact style-based, class-conditional generator (`generator.arch = "style"`).

StyleGAN2's ideas at DCGAN's cost, so it trains and serves on a 2-core CPU:

- mapping: z (2nd-moment normalised) ++ a learned class embedding (normalised) -> MLP -> w; the mean w of
  each class (`mapping.w_avg`) is stored with the weights, so truncation needs no sampling at load time;
- synthesis: a learned 4x4 constant, one modulated 3x3 conv at 4x4, then one modulated 4x4 stride-2
  transposed conv per doubling (DCGAN's up-sampling, ~DCGAN's FLOPs, instead of StyleGAN2's two 3x3 convs
  per resolution, ~10x the FLOPs); each layer has its own style (style mixing mixes these layers);
- modulation/demodulation done on the activations (x * s, shared-weight conv, x * d: StyleGAN2's
  "non-fused" form), so every conv is one ordinary batched conv;
- detail blocks (`GeneratorConfig.detail_from`, 128² and up in new models): from that resolution on, each
  doubling is StyleGAN2's block instead: bilinear up-sampling, then two modulated 3x3 convs with noise, wide
  enough to draw fine structure (a single 4x4 transposed conv of 8-16 channels drew speckle at 128²);
- per-pixel noise with learned strength ("const" noise at inference: the image depends on w alone);
- skip outputs: every layer adds its 1-channel toRGB image to the up-sampled sum (StyleGAN2's skip G).

Weights use equalised learning rate (N(0,1) parameters scaled at run time); `medgan.stylefast` folds the
scales for inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GeneratorConfig

LRELU_GAIN = math.sqrt(2.0)
W_AVG_BETA = 0.995  # running mean of w during training (StyleGAN2's w_avg_beta)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def truncate(w: torch.Tensor, w_avg: torch.Tensor, truncation: float) -> torch.Tensor:
    """The truncation trick: w pulled towards its class's mean w (w_avg + psi * (w - w_avg))."""
    return w if truncation == 1.0 else w_avg + truncation * (w - w_avg)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; lr_mul < 1 slows it (StyleGAN's mapping uses 0.01)."""

    def __init__(self, c_in: int, c_out: int, bias_init: float = 0.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init)))
        self.weight_gain, self.lr_mul = lr_mul / math.sqrt(c_in), lr_mul

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight * self.weight_gain, self.bias * self.lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.effective()
        return F.linear(x, weight, bias)


class Mapping(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.num_classes = len(cfg.classes)
        self.embed = nn.Parameter(torch.randn(self.num_classes, cfg.w_dim)) if self.num_classes else None
        dims = [cfg.latent_dim + (cfg.w_dim if self.num_classes else 0)] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=0.01) for a, b in zip(dims, dims[1:]))
        self.register_buffer("w_avg", torch.zeros(max(1, self.num_classes), cfg.w_dim))

    def class_index(self, labels: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        if not self.num_classes:
            return torch.zeros(n, dtype=torch.long, device=device)
        if labels is None:
            raise ValueError("a conditional generator needs labels")
        return labels.to(device=device, dtype=torch.long)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation: float = 1.0,
                update_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        cls = self.class_index(labels, z.shape[0], z.device)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed[cls])], dim=1)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * LRELU_GAIN
        if update_avg:
            self.track_avg(x.detach(), cls)
        return truncate(x, self.w_avg[cls], truncation)

    @torch.no_grad()
    def track_avg(self, w: torch.Tensor, cls: torch.Tensor) -> None:
        for c in cls.unique().tolist():
            self.w_avg[c].lerp_(w[cls == c].float().mean(0), 1 - W_AVG_BETA)  # fp32 under autocast too


class StyleLayer(nn.Module):
    """Modulated conv (3x3, or 4x4 stride-2 transposed when `up`) + noise + bias + leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool, noise: bool):
        super().__init__()
        self.up = up
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        shape = (c_in, c_out, 4, 4) if up else (c_out, c_in, 3, 3)
        self.weight = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.use_noise = noise
        if noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def demod_weights(self) -> torch.Tensor:
        """[c_in, c_out]: sum of squared taps that reach one output pixel (a stride-2 4x4 transposed conv
        feeds each output pixel from 4 of its 16 taps, hence /4)."""
        if self.up:
            return self.weight.square().sum(dim=(2, 3)) / 4
        return self.weight.square().sum(dim=(2, 3)).t()

    def conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.conv_transpose2d(x, weight, stride=2, padding=1)
        return F.conv2d(x, weight, padding=1)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: str | torch.Generator = "const") -> torch.Tensor:
        styles = self.affine(w)                                                    # [n, c_in]
        demod = (styles.square() @ self.demod_weights() + 1e-8).rsqrt()            # [n, c_out]
        x = self.conv(x * styles[:, :, None, None], self.weight) * demod[:, :, None, None]
        if self.use_noise:
            x = x + self.noise(x, noise) * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * LRELU_GAIN

    def noise(self, x: torch.Tensor, noise: str | torch.Generator) -> torch.Tensor:
        if isinstance(noise, torch.Generator):
            n, _, h, w = x.shape
            return torch.randn(n, 1, h, w, generator=noise).to(x.device)
        return self.noise_const


class ToImage(nn.Module):
    """Modulated 1x1 conv to the image channels, no demodulation (StyleGAN2's toRGB)."""

    def __init__(self, c_in: int, channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, c_in))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = 1 / math.sqrt(c_in)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        y = torch.einsum("nchw,oc->nohw", x * styles[:, :, None, None], self.weight)
        return y + self.bias[None, :, None, None]


def upsample(image: torch.Tensor) -> torch.Tensor:
    return F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)


class DetailBlock(nn.Module):
    """One doubling in the manner of StyleGAN2: bilinear up-sampling, two modulated 3x3 convs with per-pixel
    noise, and a toRGB skip. conv0 takes w number `ws_index`, conv1 and toRGB the next one."""

    def __init__(self, c_in: int, c_out: int, cfg: GeneratorConfig, resolution: int, ws_index: int):
        super().__init__()
        self.ws_index = ws_index
        self.conv0 = StyleLayer(c_in, c_out, cfg.w_dim, resolution, up=False, noise=cfg.noise)
        self.conv1 = StyleLayer(c_out, c_out, cfg.w_dim, resolution, up=False, noise=cfg.noise)
        self.to_image = ToImage(c_out, cfg.channels, cfg.w_dim)

    def forward(self, x: torch.Tensor, image: torch.Tensor, ws: torch.Tensor,
                noise: str | torch.Generator = "const") -> tuple[torch.Tensor, torch.Tensor]:
        k = self.ws_index
        x = self.conv0(upsample(x), ws[:, k], noise)
        x = self.conv1(x, ws[:, k + 1], noise)
        return x, upsample(image) + self.to_image(x, ws[:, k + 1])


class StyleGenerator(nn.Module):
    """z [n, latent_dim] (+ labels [n]) -> image [n, channels, R, R], roughly in [-1, 1] (clamped on output)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = Mapping(cfg)
        widths, plain = cfg.widths, cfg.plain_layers
        self.const = nn.Parameter(torch.randn(widths[0], 4, 4))
        self.layers = nn.ModuleList()
        self.to_image = nn.ModuleList()
        for i, c_out in enumerate(widths[:plain]):
            c_in = widths[max(i - 1, 0)]
            self.layers.append(StyleLayer(c_in, c_out, cfg.w_dim, 4 * 2 ** i, up=i > 0, noise=cfg.noise))
            self.to_image.append(ToImage(c_out, cfg.channels, cfg.w_dim))
        # Detail blocks live in their own list, so a model grown from a plain one keeps every tensor name.
        self.blocks = nn.ModuleList(
            DetailBlock(widths[i - 1], widths[i], cfg, 4 * 2 ** i, ws_index=plain + 2 * (i - plain))
            for i in range(plain, len(widths)))

    @property
    def num_ws(self) -> int:
        return len(self.layers) + 2 * len(self.blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation: float = 1.0) -> torch.Tensor:
        w = self.mapping(z, labels, truncation)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1))

    def synthesis(self, ws: torch.Tensor, noise: str | torch.Generator = "const") -> torch.Tensor:
        """ws [n, num_ws, w_dim]: one w per layer (equal rows unless styles are mixed)."""
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        image = None
        for i, (layer, to_image) in enumerate(zip(self.layers, self.to_image)):
            x = layer(x, ws[:, i], noise)
            y = to_image(x, ws[:, i])
            image = y if image is None else upsample(image) + y
        for block in self.blocks:
            x, image = block(x, image, ws, noise)
        return image


def style_param_count(cfg: GeneratorConfig) -> int:
    """Parameters of StyleGenerator(cfg), counted on the meta device (nothing is allocated: the size cap runs
    before allocation)."""
    with torch.device("meta"):
        return sum(p.numel() for p in StyleGenerator(cfg).parameters())


def style_flops(cfg: GeneratorConfig) -> int:
    """Multiply-adds x2 of one synthesis pass (convs only)."""
    flops, widths = 0, cfg.widths
    for i, c_out in enumerate(widths):
        c_in, size = widths[max(i - 1, 0)], 4 * 2 ** i
        if i >= cfg.plain_layers:    # detail block: two 3x3 convs at the output size
            flops += 2 * (c_in + c_out) * c_out * 9 * size * size
        else:                        # 3x3 at 4x4, then 4x4 transposed convs scattering from size/2
            in_size = 4 * 2 ** max(i - 1, 0)
            flops += 2 * c_in * c_out * (16 if i > 0 else 9) * in_size * in_size
        flops += 2 * c_out * cfg.channels * size * size
    return flops
