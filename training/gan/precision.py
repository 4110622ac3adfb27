"""How the trainer runs on each device: number formats, memory layout and compilation.

On CUDA: bf16 autocast for the G and D forward passes (the losses and the R1 penalty stay in fp32: R1 steps
run D's real pass without autocast, since R1's double backward through bf16 loses the small gradients it
penalises), channels-last tensors (cuDNN's NHWC kernels) and TF32 matmuls. On CPU: none of these, so a CPU
run is bit-for-bit the run it was before they existed. `--compile` wraps D in torch.compile for its plain
passes; R1's double backward always goes through the eager module (compiled graphs have no double backward).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None = None   # None: plain fp32
    channels_last: bool = False
    tf32: bool = False
    compile: bool = False

    @classmethod
    def for_device(cls, device: torch.device, amp: bool = True, compile: bool = False) -> "Precision":
        """The choices for `device`: everything on CUDA (bf16 where the card has it), nothing on CPU except
        an explicit --compile."""
        if device.type != "cuda":
            return cls(compile=compile)
        bf16 = amp and torch.cuda.is_bf16_supported()
        return cls(autocast_dtype=torch.bfloat16 if bf16 else None, channels_last=True, tf32=True, compile=compile)

    def describe(self) -> dict[str, Any]:
        return {"autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "off",
                "channels_last": self.channels_last, "tf32": self.tf32, "compile": self.compile}

    def apply_globals(self) -> None:
        """Process-wide switches (TF32 is a global setting of torch)."""
        if self.tf32:
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True

    def autocast(self, device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(memory_format=torch.channels_last) if self.channels_last else module

    def match_layout(self, opt: torch.optim.Optimizer) -> None:
        """After an optimizer state is loaded (saved contiguous): give each state tensor its parameter's memory
        layout, so fused Adam pairs the same elements of parameter, gradient and moments."""
        if not self.channels_last:
            return
        for group in opt.param_groups:
            for p in group["params"]:
                for key, value in opt.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.shape == p.shape and p.dim() == 4:
                        opt.state[p][key] = value.contiguous(memory_format=torch.channels_last)

    def compiled(self, module: torch.nn.Module) -> Callable[..., torch.Tensor]:
        return torch.compile(module) if self.compile else module
