"""The style generator re-laid-out for inference: same maths as `StyleGenerator` with const noise, fewer passes.

- equalised-lr gains folded into the weights once;
- all per-layer styles from ONE matmul (the affines of every layer concatenated);
- the first mapping layer's class half is a per-class bias (a class embedding is a constant);
- the 4x4 layer's input is the learned constant, so conv(const * s) = s @ P with P precomputed per input
  channel: one matmul instead of a conv;
- noise * strength + bias is one precomputed map per layer; the leaky ReLU's gain sqrt(2) is folded into the
  demodulation and that map (lrelu(g·x) = g·lrelu(x) for g > 0);
- transposed convs on channels-last tensors (oneDNN's NHWC kernels, no reorders).

Outputs match the module it was built from to float rounding (tests compare them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stylenet import LRELU_GAIN, StyleGenerator, normalize_2nd_moment, upsample


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
        affines = [m.affine.effective() for m in ref.layers] + [m.affine.effective() for m in ref.to_image]
        self.register_buffer("aff_w", torch.cat([w for w, _ in affines]).t().contiguous())   # [w_dim, S]
        self.register_buffer("aff_b", torch.cat([b for _, b in affines]).contiguous())
        self.splits = [b.numel() for _, b in affines]
        self.layers = []
        for i, layer in enumerate(ref.layers):
            demod = layer.demod_weights().contiguous()
            c_out = layer.bias.numel()
            size = 4 * 2 ** i
            extra = layer.bias.view(1, -1, 1, 1).expand(1, c_out, size, size)
            if layer.use_noise:
                extra = extra + layer.noise_const.view(1, 1, size, size) * layer.noise_strength
            extra = (extra * LRELU_GAIN).contiguous(memory_format=torch.channels_last)
            if i == 0:  # conv of the constant, one input channel at a time: [c_in, c_out * 16]
                c_in = ref.const.shape[0]
                per_channel = F.conv2d(ref.const.unsqueeze(1) * torch.eye(c_in).view(c_in, c_in, 1, 1),
                                       layer.weight, padding=1)  # [c_in(batch), c_out, 4, 4]
                weight = per_channel.reshape(c_in, -1).contiguous()
            else:
                weight = layer.weight.contiguous(memory_format=torch.channels_last)
            self.layers.append((weight, demod, extra))
        self.to_image = [(m.weight.t().contiguous() * m.weight_gain, m.bias.clone()) for m in ref.to_image]
        self.num_ws = len(ref.layers)

    # -- mapping ------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, labels: torch.Tensor | None, truncation: float = 1.0) -> torch.Tensor:
        cls = labels.long() if labels is not None else torch.zeros(z.shape[0], dtype=torch.long)
        x = normalize_2nd_moment(z) @ self.map_w0 + self.map_b0[cls]
        x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        for w, b in self.map_rest:
            x = F.leaky_relu(torch.addmm(b, x, w), 0.2) * LRELU_GAIN
        if truncation != 1.0:
            avg = self.w_avg[cls]
            x = avg + truncation * (x - avg)
        return x

    # -- synthesis ----------------------------------------------------------------------------------
    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [n, num_ws, w_dim] -> images [n, C, R, R]."""
        n, L = ws.shape[0], self.num_ws
        if bool((ws == ws[:, :1]).all()):   # no mixing: one style matmul for all layers
            styles = torch.addmm(self.aff_b, ws[:, 0], self.aff_w).split(self.splits, dim=1)
        else:
            full = torch.einsum("nlw,ws->nls", ws, self.aff_w) + self.aff_b
            index = list(range(L)) + list(range(L))  # style block k belongs to layer k mod L
            styles = [part[:, index[k]] for k, part in enumerate(full.split(self.splits, dim=2))]
        conv_styles, image_styles = styles[:L], styles[L:]
        image = None
        x = None
        for i, (weight, demod, extra) in enumerate(self.layers):
            s = conv_styles[i]
            d = (s.square() @ demod + 1e-8).rsqrt() * LRELU_GAIN
            if i == 0:
                x = (s @ weight).view(n, -1, 4, 4)
            else:
                x = F.conv_transpose2d((x * s[:, :, None, None]).contiguous(memory_format=torch.channels_last),
                                       weight, stride=2, padding=1)
            x = F.leaky_relu_(torch.addcmul(extra, x, d[:, :, None, None]), 0.2)
            w_img, b_img = self.to_image[i]
            y = torch.einsum("nchw,nco->nohw", x, image_styles[i].unsqueeze(2) * w_img) + b_img.view(1, -1, 1, 1)
            image = y if image is None else upsample(image) + y
        return image

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation: float = 1.0) -> torch.Tensor:
        w = self.mapping(z, labels, truncation)
        return self.synthesis(w.unsqueeze(1).expand(-1, self.num_ws, -1))
