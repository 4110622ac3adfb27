"""Grow a style model to a larger resolution: `python -m training.grow weights/<id> --size 128 --out runs/<name>`.

The new model folder holds the source's tensors unchanged and one detail block per new doubling
(`medgan.stylenet.DetailBlock`: bilinear up-sampling, two modulated 3x3 convs, a toRGB skip). Each new toRGB
starts at zero, so the grown model draws exactly the source's images, bilinearly up-sampled, until it is
trained: `python -m training.train --init-from runs/<name> --size 128 …` (a fresh discriminator at the new
size; docs/training.md). The folder is a starting point for training, not a model to publish: it draws no
detail the source does not.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

from medgan.config import RESOLUTIONS, ModelConfig
from medgan.errors import MedganError
from medgan.generator import load_weights, save_model_folder
from medgan.nets import build_generator

DEFAULT_WIDTH = 32  # channels of each new detail block (two 3x3 convs at 128²: ~0.5 GFLOP per image)


def lineage_totals(training: dict) -> tuple[int, float]:
    """(steps, CPU seconds) of a model's training, including the model it was warm-started or grown from."""
    prior = training.get("init_from", {})
    return (int(training.get("steps", 0)) + int(prior.get("steps", 0)),
            float(training.get("cpu_time_s", 0.0)) + float(prior.get("cpu_time_s", 0.0)))


def warm_state(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """`own` (a generator's state) with every tensor of `tensors` that fits by name and shape; of the rest, the
    toRGB weights start at zero, so a grown resolution first adds nothing to the up-sampled skip sum.
    Returns (state, copied names, new names)."""
    copied = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    new = sorted(k for k in own if k not in copied)
    start = {k: torch.zeros_like(own[k]) for k in new if "to_image" in k.split(".") and k.endswith(".weight")}
    return {**own, **copied, **start}, sorted(copied), new


def grow_config(source: ModelConfig, size: int, widths: list[int], model_id: str) -> ModelConfig:
    gen = source.generator
    if gen.arch != "style":
        raise MedganError(f"{source.id}: only style models grow (this one is {gen.arch})")
    if size not in RESOLUTIONS or size <= gen.resolution:
        raise MedganError(f"--size must be one of {[r for r in RESOLUTIONS if r > gen.resolution]} "
                          f"(the source draws at {gen.resolution}²), got {size}")
    doublings = int(math.log2(size // gen.resolution))
    widths = (widths * doublings)[:doublings] if len(widths) == 1 else widths
    if len(widths) != doublings:
        raise MedganError(f"--widths needs 1 or {doublings} values for {gen.resolution}² -> {size}², got {widths}")
    detail_from = gen.detail_from if gen.detail_from and gen.detail_from <= gen.resolution else gen.resolution * 2
    grown = dataclasses.replace(gen, resolution=size, widths=[*gen.widths, *widths], detail_from=detail_from)
    steps, cpu_s = lineage_totals(source.training)
    lineage = {"model": source.id, "resolution": gen.resolution, "steps": steps, "cpu_time_s": cpu_s}
    return dataclasses.replace(source, id=model_id, generator=grown, metrics={}, extra={},
                               title=f"{source.title or source.id}, grown to {size}² (untrained detail blocks)",
                               training={"grown_from": lineage, "steps": 0, "cpu_time_s": 0.0, "init_from": lineage})


def grow(folder: str | Path, size: int, out: str | Path, widths: list[int] | None = None,
         model_id: str = "", seed: int = 0) -> Path:
    """Write the grown model folder to `out`; returns it."""
    folder = Path(folder)
    source = ModelConfig.load(folder)
    config = grow_config(source, size, list(widths or [DEFAULT_WIDTH]), model_id or f"{source.id}-grown-{size}")
    torch.manual_seed(seed)
    net = build_generator(config.generator)
    tensors = load_weights(folder, source.id)
    state, copied, _ = warm_state(net.state_dict(), tensors)
    if len(copied) != len(tensors):  # growing only appends blocks: every source tensor has its place
        raise MedganError(f"{source.id}: tensors without a place in the grown generator: "
                          f"{sorted(set(tensors) - set(copied))[:5]}")
    net.load_state_dict(state)
    return save_model_folder(out, config, net.eval())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.grow", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model folder of a style model (e.g. weights/brain-t1-style-64)")
    p.add_argument("--size", type=int, required=True, help="resolution to grow to (128 or 256)")
    p.add_argument("--out", required=True, help="folder to write (e.g. runs/brain-t1-grown-128)")
    p.add_argument("--widths", type=int, nargs="+", default=[DEFAULT_WIDTH],
                   help=f"channels of each new detail block, one value or one per doubling (default {DEFAULT_WIDTH})")
    p.add_argument("--model-id", default="", help="id of the grown model (default <source>-grown-<size>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new blocks' initial weights")
    args = p.parse_args(argv)
    try:
        out = grow(args.model, args.size, args.out, args.widths, args.model_id, args.seed)
    except (MedganError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"grown {args.model} to {args.size}² -> {out} (train it with: python -m training.train --init-from {out} "
          f"--size {args.size} …)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
