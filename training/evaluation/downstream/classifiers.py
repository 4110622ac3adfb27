"""The classifiers (a small CNN, ResNet-18), a local --init checkpoint, training and prediction."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medgan.generator import PICKLE_SUFFIXES

from .design import CLASSIFIERS, DownstreamError


def make_classifier(kind: str, num_classes: int):
    """A fresh classifier for [n, 1, N, N] inputs in [-1, 1]: "cnn" (small, fast on CPU) or "resnet18"
    (torchvision's, 1 input channel, random init)."""
    from torch import nn

    if kind == "cnn":
        def block(cin: int, cout: int, stride: int = 1, pool: bool = False) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])
        return nn.Sequential(*block(1, 16, stride=2), *block(16, 32, pool=True), *block(32, 64, pool=True),
                             *block(64, 64), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2),
                             nn.Linear(256, num_classes))
    if kind == "resnet18":
        from torchvision.models import resnet18
        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        return net
    raise DownstreamError(f"unknown classifier {kind!r}; choose from {', '.join(CLASSIFIERS)}")


def read_init(path: str | Path) -> dict[str, Any]:
    """A local safetensors checkpoint (pickles are refused unopened); keys with a `module.` prefix are fine."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise DownstreamError(f"--init {path.name}: pickle checkpoints are refused (they run code when opened); "
                              "convert it to .safetensors")
    if not path.is_file():
        raise DownstreamError(f"--init {path}: no such file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DownstreamError(f"--init {path.name}: not a readable safetensors file ({exc})") from None
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def apply_init(net, tensors: dict[str, Any]) -> dict[str, Any]:
    """Copy every tensor whose name and shape fit (a 3-channel first conv is summed to 1 channel, the usual
    ImageNet adaptation); report what was loaded. Raises when under half of the network's tensors fit."""
    import torch

    state = net.state_dict()
    loaded, adapted = [], []
    with torch.no_grad():
        for key, want in state.items():
            got = tensors.get(key)
            if got is None or key.endswith("num_batches_tracked"):
                continue
            if tuple(got.shape) == tuple(want.shape):
                state[key] = got.to(want.dtype)
                loaded.append(key)
            elif got.ndim == 4 and want.ndim == 4 and got.shape[1] == 3 and want.shape[1] == 1 \
                    and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]:
                state[key] = got.sum(1, keepdim=True).to(want.dtype)
                loaded.append(key)
                adapted.append(key)
    total = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    if len(loaded) < total / 2:
        raise DownstreamError(f"the --init checkpoint fits {len(loaded)} of {total} tensors of this classifier")
    net.load_state_dict(state)
    return {"loaded_tensors": len(loaded), "total_tensors": total, "adapted_to_1_channel": adapted,
            "skipped": sorted(k for k in state if k not in loaded and not k.endswith("num_batches_tracked"))[:20]}


def to_input(x):
    return x.float().div_(127.5).sub_(1.0)


def fit(net, x, y, *, steps: int, lr: float, batch: int, seed: int, device, desc: str = "", progress=None,
        balanced: bool = False):
    """`steps` AdamW steps (weight decay 1e-4, cosine decay to 0) on batches drawn with replacement from uint8
    images x [n, 1, N, N] and labels y, in an order fixed by `seed`: uniformly, or with every class equally
    likely (`balanced`: each image weighted 1 / its class's count; for skewed tasks such as brain-mr's contrast,
    where a uniform draw teaches the majority class)."""
    import torch
    import torch.nn.functional as F

    if len(x) == 0:
        raise DownstreamError(f"{desc}: no training images")
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)
    draw = batch_sampler(y, batch, gen, balanced)
    net.train()
    for _ in range(steps):
        idx = draw()
        loss = F.cross_entropy(net(to_input(x[idx]).to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress.update(1)
    net.eval()
    return net


def batch_sampler(y, batch: int, gen, balanced: bool):
    """A function drawing `batch` indices of labels y with replacement: uniformly, or each class equally likely."""
    import torch

    if not balanced:
        return lambda: torch.randint(len(y), (batch,), generator=gen)
    weights = 1.0 / torch.bincount(y)[y].double()
    return lambda: torch.multinomial(weights, batch, replacement=True, generator=gen)


def predict(net, x, device, batch: int = 256) -> np.ndarray:
    """Class probabilities [n, K] of uint8 images x [n, 1, N, N]."""
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(torch.softmax(net(to_input(x[i:i + batch]).to(device)), 1).cpu())
    return torch.cat(out).numpy()
