"""Train a generator (DCGAN or style-based) on medical image slices and export a medgan model folder.

    python -m training.train --dataset brain-t1 --size 64 --out runs/brain-t1 --recipe small-data
    python -m training.train --dataset brain-t1 --arch style --condition level --out runs/brain-style
    python -m training.train --resume runs/brain-t1                       # continue exactly
    python -m training.train --resume runs/brain-t1 --lr-g 5e-4 --ema 0.999 # anneal once FID plateaus
    torchrun --nproc_per_node 2 -m training.train --dataset brain-t1 ...  # data-parallel

Two recipes (`--recipe dcgan | small-data`); every recipe setting is also a flag that overrides it.
One `TrainConfig` holds every option; it goes into each checkpoint and the exported config.json.

Reproducibility (a resumed run equals an uninterrupted one bit for bit on CPU) and data parallel under torchrun:
see training/gan/trainer.py. Only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from medgan.config import RESOLUTIONS

from ..data.labels import LABEL_KINDS
from . import checkpoint as ckpt
from .config import ARCH_DEFAULTS, LOSSES, RECIPES, UsageError, check_config, make_config
from .loop import run


def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # absent options stay absent, so recipe values are only overridden on purpose
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                argument_default=S)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="built-in dataset name (see training.data)")
    data.add_argument("--data", help="dataset (.npz or folder) made by training.data; a folder's images are read "
                                     "from disk batch by batch")
    data.add_argument("--size", type=int, choices=RESOLUTIONS, help="image size; default 64")
    data.add_argument("--axes", type=int, nargs="+", help="volume axes to slice (default 2 = axial)")
    rec = p.add_argument_group("recipe (each flag overrides the recipe)")
    rec.add_argument("--recipe", choices=sorted(RECIPES), help="default small-data")
    rec.add_argument("--arch", choices=sorted(ARCH_DEFAULTS), help="generator architecture (default dcgan)")
    rec.add_argument("--condition", help=f"label kind to condition on: {', '.join(LABEL_KINDS)} (default: "
                                         "unconditional)")
    rec.add_argument("--balance-classes", action=argparse.BooleanOptionalAction,
                     help="draw each class equally often (rare contrasts), not in proportion to the data")
    rec.add_argument("--style-mixing", type=float, help="style only: probability of mixing two latents")
    rec.add_argument("--loss", choices=LOSSES)
    rec.add_argument("--augment", action=argparse.BooleanOptionalAction, help="DiffAugment")
    rec.add_argument("--augment-policy", help="comma list of color, translation, cutout")
    rec.add_argument("--augment-p", type=float, help="probability of each augmentation (fixed)")
    rec.add_argument("--ada-target", type=float, help="adaptive p targeting E[sign(D(real))] (e.g. 0.6)")
    rec.add_argument("--ada-kimg", type=float)
    rec.add_argument("--hflip", action=argparse.BooleanOptionalAction, help="random left-right flips of reals")
    rec.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, help="spectral norm in D")
    rec.add_argument("--d-batchnorm", action=argparse.BooleanOptionalAction, help="BatchNorm in D")
    rec.add_argument("--r1", type=float, metavar="GAMMA", help="R1 penalty weight (0 = off)")
    rec.add_argument("--r1-every", type=int)
    rec.add_argument("--ema", type=float, metavar="DECAY", help="EMA generator decay (0 = off)")
    rec.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction)
    rec.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction)
    opt = p.add_argument_group("optimisation and architecture")
    for name, kind in (("steps", int), ("batch-size", int), ("lr-g", float), ("lr-d", float), ("beta1", float),
                       ("beta2", float), ("latent-dim", int), ("base-width", int), ("d-width", int),
                       ("w-dim", int), ("mapping-layers", int), ("channel-base", int), ("detail-from", int)):
        opt.add_argument(f"--{name}", type=kind)
    run = p.add_argument_group("run")
    run.add_argument("--out", help="run directory (default runs/<dataset>-<recipe>-<size>)")
    run.add_argument("--resume", help="run directory or checkpoint file to continue")
    run.add_argument("--init-from", metavar="MODEL_FOLDER",
                     help="warm-start G from an exported model (conditional if this run is; other classes start "
                     "their class tensors new; a larger --size grows it); D continues from the folder's "
                     "discriminator.safetensors when it fits, else starts fresh, which sets a trained G back: "
                     "to continue a run use --resume")
    for name, kind in (("seed", int), ("sample-seed", int), ("threads", int), ("sample-every", int),
                       ("ckpt-every", int), ("log-every", int), ("max-minutes", float), ("max-cpu-minutes", float),
                       ("fid-every", int), ("fid-images", int)):
        run.add_argument(f"--{name}", type=kind)
    private = p.add_argument_group("differential privacy (training/gan/dp.py: DP-SGD on D with Opacus)")
    private.add_argument("--dp-epsilon", type=float, metavar="E",
                         help="train D with DP-SGD to (E, --dp-delta)-DP; stops when the budget is spent")
    private.add_argument("--dp-delta", type=float, metavar="D", help="δ, below 1/training slices (e.g. 1e-5)")
    private.add_argument("--dp-noise-multiplier", type=float, metavar="SIGMA",
                         help="noise multiplier (default: the one whose --steps spend exactly E)")
    private.add_argument("--dp-max-grad-norm", type=float, metavar="C", help="per-sample gradient clip (default 1)")
    run.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    run.add_argument("--amp", action=argparse.BooleanOptionalAction,
                     help="bf16 autocast for G and D forward passes on CUDA (default on; never used on CPU)")
    run.add_argument("--compile", action=argparse.BooleanOptionalAction,
                     help="torch.compile the discriminator's passes that need no double backward")
    meta = p.add_argument_group("export")
    meta.add_argument("--export", metavar="FOLDER", help="model folder to write (default <out>/model)")
    for name in ("model-id", "title", "modality", "organ", "plane", "description"):
        meta.add_argument(f"--{name}")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = vars(build_parser().parse_args(argv))
    try:
        resume = args.pop("resume", None)
        resumed_cfg = None
        if resume:
            try:
                path = ckpt.resolve(resume)
                meta = ckpt.load_checkpoint(path)[1]
                if meta.get("kind") == "discriminator":
                    raise UsageError(f"{resume} holds only an exported discriminator: continue from its model "
                                     "folder with --init-from, or --resume a run folder")
                resumed_cfg = meta["config"]
            except ckpt.CheckpointError as exc:
                raise UsageError(str(exc)) from None
            args.setdefault("out", str(path.parent))
            resume = str(path)
        cfg = make_config(args, resumed_cfg)
        check_config(cfg)
        run(cfg, argv, resume=resume)
    except (UsageError, ckpt.CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
