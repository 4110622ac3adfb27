"""The BN-folded DCGAN generator re-laid-out for fast CPU inference (same maths, fp32, channels-last).

Measured on a 2-core Xeon (benchmarks/, section "layers"): oneDNN's transposed conv is near matmul peak for
the 8x8 -> 32x32 blocks, but slow where its shape is awkward, so those layers become plain matmuls:

- the first layer (1x1 latent -> 4x4) is a matmul `z @ W` (a transposed conv on a 1x1 input is exactly that);
- the 4x4 -> 8x8 block is a matmul to 16 taps per input pixel plus 16 strided adds (col2im), ~1.5x faster;
- the output layer (64 -> 1 channel) is a batched matmul plus `F.fold`, ~4x faster: with one output channel
  the transposed-conv kernel cannot vectorise over channels;
- every other block is oneDNN's transposed conv on channels-last tensors (no NCHW reorder copies).

Outputs match the module it was built from to ~1e-6 (float summation order only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_INPUT = 4  # blocks whose input is at most this many pixels wide use matmul + col2im


class FastDCGAN(nn.Module):
    """Built from a BN-folded `Sequential` of (ConvTranspose2d k4, ReLU)* ConvTranspose2d k4, Tanh."""

    def __init__(self, folded: nn.Sequential):
        super().__init__()
        mods = list(folded)
        if len(mods) % 2 or len(mods) < 4:
            raise ValueError("not a folded DCGAN generator: expected (ConvTranspose2d, activation) pairs")
        self.plan: list[tuple[str, str, int]] = []   # (kind, activation, out channels)
        size = 1
        for i in range(0, len(mods), 2):
            conv, act = mods[i], mods[i + 1]
            first, last = i == 0, i == len(mods) - 2
            want = ((1, 1), (0, 0)) if first else ((2, 2), (1, 1))
            if (not isinstance(conv, nn.ConvTranspose2d) or conv.kernel_size != (4, 4) or conv.groups != 1
                    or (conv.stride, conv.padding) != want or conv.output_padding != (0, 0)
                    or conv.dilation != (1, 1) or not isinstance(act, nn.Tanh if last else nn.ReLU)):
                raise ValueError(f"not a folded DCGAN generator: unexpected layer {i}: {conv} / {act}")
            w = conv.weight.detach()
            c_in, c_out = w.shape[0], w.shape[1]
            bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(c_out)
            if first:
                kind, weight = "first", w.permute(0, 2, 3, 1).reshape(c_in, 16 * c_out)          # (ky, kx, c)
                bias = bias.repeat(16)
            elif last and c_out <= 4:
                kind, weight = "fold", w.reshape(c_in, c_out * 16).t()                          # (c, ky, kx)
            elif size <= SMALL_INPUT:
                kind, weight = "col2im", w.permute(0, 2, 3, 1).reshape(c_in, 16 * c_out)
            else:
                kind, weight = "deconv", w.contiguous(memory_format=torch.channels_last)
            n = len(self.plan)
            self.register_buffer(f"w{n}", weight.contiguous() if kind != "deconv" else weight)
            self.register_buffer(f"b{n}", bias)
            self.plan.append((kind, "tanh" if last else "relu", c_out))
            size = 4 if first else size * 2

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        x = z.reshape(n, -1)
        size = 1
        for index, (kind, act, c_out) in enumerate(self.plan):
            w, b = getattr(self, f"w{index}"), getattr(self, f"b{index}")
            if kind == "first":
                x = torch.addmm(b, x, w).view(n, 4, 4, c_out).permute(0, 3, 1, 2)
                size = 4
            elif kind == "col2im":
                cols = (x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) @ w).view(n, size, size, 4, 4, c_out)
                out = b.expand(n, 2 * size + 2, 2 * size + 2, c_out).contiguous()
                # Output pixel 2*i - 1 + k receives tap k of input pixel i (stride 2, padding 1).
                for ky in range(4):
                    for kx in range(4):
                        out[:, ky:ky + 2 * size:2, kx:kx + 2 * size:2] += cols[:, :, :, ky, kx]
                x = out[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
                size *= 2
            elif kind == "fold":
                cols = torch.matmul(w, x.reshape(n, x.shape[1], size * size))   # [n, c_out*16, H*W]
                x = F.fold(cols, (2 * size, 2 * size), 4, stride=2, padding=1).add_(b.view(1, -1, 1, 1))
                size *= 2
            else:
                x = F.conv_transpose2d(x, w, b, stride=2, padding=1)
                size *= 2
            x = x.relu_() if act == "relu" else x.tanh_()
        return x
