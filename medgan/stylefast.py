"""The style generator re-laid-out for inference: same maths as `StyleGenerator` with const noise, fewer passes.

- equalised-lr gains folded into the weights once;
- all per-layer styles from ONE matmul (the affines of every layer concatenated);
- the first mapping layer's class half is a per-class bias (a class embedding is a constant);
- the 4x4 layer's input is the learned constant, so conv(const * s) = s @ P with P precomputed per input
  channel: one matmul instead of a conv;
- noise * strength + bias is one precomputed map per layer; the leaky ReLU's gain sqrt(2) is folded into the
  demodulation and that map (lrelu(g·x) = g·lrelu(x) for g > 0);
- transposed convs, and the detail blocks' 3x3 convs, on channels-last tensors (oneDNN's NHWC kernels, no
  reorders), with bias, noise, demodulation and gain in one fused multiply-add.

Outputs match the module it was built from to float rounding (tests compare them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stylenet import LRELU_GAIN, StyleGenerator, normalize_2nd_moment, truncate, upsample


class FastStyle(nn.Module):
    def __init__(self, ref: StyleGenerator):
        super().__init__()
        ref = ref.eval()
        with torch.no_grad():
            self._fold_mapping(ref)
            self._fold_synthesis(ref)

    def _fold_mapping(self, ref: StyleGenerator) -> None:
        mapping = ref.mapping
        weights = [layer.effective() for layer in mapping.layers]
        w0, b0 = weights[0]
        z_dim = ref.cfg.latent_dim
        if mapping.embed is not None:  # class half of layer 0 -> one bias row per class
            class_bias = normalize_2nd_moment(mapping.embed) @ w0[:, z_dim:].t() + b0
        else:
            class_bias = b0.unsqueeze(0)
        self.register_buffer("map_w0", w0[:, :z_dim].t().contiguous())
        self.register_buffer("map_b0", class_bias.contiguous())
        self.map_rest = [(w.t().contiguous(), b.clone()) for w, b in weights[1:]]
        self.register_buffer("w_avg", mapping.w_avg.clone())

    def _fold_synthesis(self, ref: StyleGenerator) -> None:
        convs = [(m, i) for i, m in enumerate(ref.layers)]
        convs += [(m, b.ws_index + k) for b in ref.blocks for k, m in enumerate((b.conv0, b.conv1))]
        images = [(m, i) for i, m in enumerate(ref.to_image)] + [(b.to_image, b.ws_index + 1) for b in ref.blocks]
        affines = [m.affine.effective() for m, _ in convs] + [m.affine.effective() for m, _ in images]
        self.register_buffer("aff_w", torch.cat([w for w, _ in affines]).t().contiguous())   # [w_dim, S]
        self.register_buffer("aff_b", torch.cat([b for _, b in affines]).contiguous())
        self.splits = [b.numel() for _, b in affines]
        self.ws_index = [i for _, i in convs] + [i for _, i in images]   # the w each style block comes from
        self.layers = [self._fold_conv(ref, layer, first=n == 0) for n, (layer, _) in enumerate(convs)]
        self.to_image = [(m.weight.t().contiguous() * m.weight_gain, m.bias.clone()) for m, _ in images]
        self.num_ws, self.plain = ref.num_ws, len(ref.layers)

    @staticmethod
    def _fold_conv(ref: StyleGenerator, layer, first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight, demod, extra) of one modulated conv: extra = (bias + const noise) * gain, channels-last."""
        demod = layer.demod_weights().contiguous()
        extra = layer.bias.view(1, -1, 1, 1)
        if layer.use_noise:
            extra = extra + layer.noise_const[None, None] * layer.noise_strength
        extra = (extra * LRELU_GAIN).contiguous(memory_format=torch.channels_last)
        if first:  # conv of the constant, one input channel at a time: [c_in, c_out * 16]
            c_in = ref.const.shape[0]
            per_channel = F.conv2d(ref.const.unsqueeze(1) * torch.eye(c_in).view(c_in, c_in, 1, 1),
                                   layer.weight, padding=1)  # [c_in(batch), c_out, 4, 4]
            return per_channel.reshape(c_in, -1).contiguous(), demod, extra
        return layer.weight.contiguous(memory_format=torch.channels_last), demod, extra

    # -- mapping ------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, labels: torch.Tensor | None, truncation: float = 1.0) -> torch.Tensor:
        cls = labels.long() if labels is not None else torch.zeros(z.shape[0], dtype=torch.long)
        x = normalize_2nd_moment(z) @ self.map_w0 + self.map_b0[cls]
        x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        for w, b in self.map_rest:
            x = F.leaky_relu(torch.addmm(b, x, w), 0.2) * LRELU_GAIN
        return truncate(x, self.w_avg[cls], truncation)

    # -- synthesis ----------------------------------------------------------------------------------
    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Every conv's and toRGB's style [n, c], from one matmul when no styles are mixed."""
        if bool((ws == ws[:, :1]).all()):
            return list(torch.addmm(self.aff_b, ws[:, 0], self.aff_w).split(self.splits, dim=1))
        full = torch.einsum("nlw,ws->nls", ws, self.aff_w) + self.aff_b
        return [part[:, self.ws_index[k]] for k, part in enumerate(full.split(self.splits, dim=2))]

    def conv(self, k: int, x: torch.Tensor | None, s: torch.Tensor, n: int) -> torch.Tensor:
        weight, demod, extra = self.layers[k]
        d = (s.square() @ demod + 1e-8).rsqrt() * LRELU_GAIN
        if x is None:
            x = (s @ weight).view(n, -1, 4, 4)
        elif k < self.plain:
            x = F.conv_transpose2d((x * s[:, :, None, None]).contiguous(memory_format=torch.channels_last),
                                   weight, stride=2, padding=1)
        else:
            x = F.conv2d((x * s[:, :, None, None]).contiguous(memory_format=torch.channels_last), weight, padding=1)
        return F.leaky_relu_(torch.addcmul(extra, x, d[:, :, None, None]), 0.2)

    def rgb(self, k: int, x: torch.Tensor, s: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        w_img, b_img = self.to_image[k]
        y = torch.einsum("nchw,nco->nohw", x, s.unsqueeze(2) * w_img) + b_img.view(1, -1, 1, 1)
        return y if image is None else upsample(image) + y

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [n, num_ws, w_dim] -> images [n, C, R, R]."""
        n, convs = ws.shape[0], len(self.layers)
        styles = self.styles(ws)
        conv_styles, image_styles = styles[:convs], styles[convs:]
        image = x = None
        for i in range(self.plain):
            x = self.conv(i, x, conv_styles[i], n)
            image = self.rgb(i, x, image_styles[i], image)
        for j in range((convs - self.plain) // 2):
            x, image = self.block(j, x, image, conv_styles, image_styles)
        return image

    def block(self, j: int, x: torch.Tensor, image: torch.Tensor, conv_styles: list[torch.Tensor],
              image_styles: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Detail block j (medgan.stylenet.DetailBlock): up-sampling, two 3x3 convs, toRGB into the skip sum."""
        k = self.plain + 2 * j
        x = self.conv(k, upsample(x), conv_styles[k], x.shape[0])
        x = self.conv(k + 1, x, conv_styles[k + 1], x.shape[0])
        return x, self.rgb(self.plain + j, x, image_styles[self.plain + j], image)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation: float = 1.0) -> torch.Tensor:
        w = self.mapping(z, labels, truncation)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1))
