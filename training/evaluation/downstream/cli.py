"""Downstream usefulness of a generator: does training a classifier on its images help on real scans?

    python -m training.downstream weights/<id> --task level [--data DATASET.npz | --dataset NAME] --out DIR
           [--quick] [--seeds 3] [--classifier cnn|resnet18|both] [--init PATH] [--threads 1]
           [--synthetic SYNTHETIC_DIR]

The task is labelled from REAL data with a subject-level split: classify the slice's anatomical `level` (the
5 position bands the conditional generator is trained with; training.data), where the data has several
slicing planes its `plane`, and where it mixes MR contrasts (brain-mr) its `contrast`. Classifiers train on the dataset's `train` split (the generator's training
subjects) and are tested ONLY on its `heldout` split. Before anything is trained, the test subjects are compared
with the subjects the generator was trained on (training_data in config.json: a recorded list; else the
training-split sha256 matched against this dataset's train split; else every subject of the recorded sources,
conservatively); any overlap stops the run with exit status 2, naming the subjects. A single-subject "slab"
dataset (head-ct) always overlaps: `--allow-slab-split` runs it anyway and says in every output that the test
set is NOT subject-independent.

Regimes (REGIMES), each over >= 3 seeds (classifier init, data order, low-data subset and synthetic seed all
change with the seed; regimes share them within a seed, so differences are paired), as mean and 95 %
t-interval over seeds: real only (TRTR), synthetic only (TSTR, as many images as real), real + synthetic 1:1
and 1:4, 10 % and 25 % of the real slices with and without synthetic (as many synthetic images as the FULL real
set), synthetic pre-training then fine-tuning on real, and, with `--init PATH` (a local safetensors checkpoint:
ImageNet weights cannot be downloaded here), that checkpoint fine-tuned on real. Every regime trains for the
same number of optimiser steps (pre-training: twice, once per phase); the final weights are tested (no model
selection on the test set). Synthetic labels: a conditional generator's own class (`label=`, drawn in the real
training split's class proportions); an unconditional model's images are labelled by the TRTR classifier (same
architecture and seed), and the report says so. `--synthetic DIR` takes the synthetic images from a prepared parquet
dataset of the same model instead of generating them (synthetic.py: each seed draws its pool from the dataset's
rows, labels from its `label` column); the results then go to --out only.

Classifiers: a small CNN (~60 k parameters) and torchvision's ResNet-18 with one input channel, both from
scratch. Metrics: accuracy, balanced accuracy (headline), macro-F1 (both over the classes present in the test
set), per-class recall (null for classes absent from the test set) and the confusion matrix.

Outputs: DIR/downstream.json (SCHEMA below; also written into the model folder with a summary in config.json
`metrics["downstream"]` and the card re-rendered, unless --no-write) and DIR/downstream.png (balanced accuracy
per regime with 95 % CIs). Runtime: --quick (CNN, tiny steps) is a smoke test (<= 2 min: 38 CPU-s on brain-t1);
the full study (CNN 200 steps + ResNet-18 100 steps per regime, batch 32, 3 seeds) targets <= 30 CPU-minutes
for one model on one thread: ~26 min estimated for brain-t1 at 64² from measured per-step costs (ResNet-18 is
~80 %). The CPU time used is recorded in downstream.json.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from medgan.dataset import weights_revision
from medgan.errors import MedganError

from ...data.labels import LABEL_KINDS
from ...data.pseudonyms import with_option
from ..model_folder import record_metrics, resolve_model, write_json
from .design import CLASSIFIERS, DEFAULT_STEPS, QUICK_STEPS, DownstreamError
from .report import config_summary, plot, summary_text
from .study import Settings, run_study
from .synthetic import read_synthetic
from .task import leakage_check, load_task, task_axes


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.downstream", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder (weights/<id>) or the id of a local model")
    p.add_argument("--task", choices=LABEL_KINDS, default="level",
                   help="the label kind to classify (default level)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="a labelled slices .npz or dataset folder (training.data)")
    src.add_argument("--dataset", help="a built-in dataset (default: the one the model was trained on)")
    p.add_argument("--out", required=True, type=Path, help="output folder (downstream.json, downstream.png)")
    p.add_argument("--quick", action="store_true", help=f"smoke test: CNN only, {QUICK_STEPS} steps per regime")
    p.add_argument("--seeds", type=int, default=3, help="seeds per regime (>= 3, default 3)")
    p.add_argument("--seed", type=int, default=0, help="first seed (seeds are SEED, SEED+1, ...)")
    p.add_argument("--classifier", choices=("cnn", "resnet18", "both"), default=None,
                   help="default both (--quick: cnn)")
    p.add_argument("--steps", type=int, help=f"optimiser steps per regime (default cnn {DEFAULT_STEPS['cnn']}, "
                                              f"resnet18 {DEFAULT_STEPS['resnet18']})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--init", help="a local .safetensors checkpoint to start one more regime from (fine-tuned on "
                                  "real); ImageNet weights cannot be downloaded here")
    p.add_argument("--truncation", type=float, default=1.0, help="ψ for the synthetic images (default 1)")
    p.add_argument("--synthetic", type=Path, help="a parquet dataset of this model (python -m medgan.dataset MODEL "
                                                  "--format parquet) to draw the synthetic images from instead of "
                                                  "generating them; results go to --out only")
    p.add_argument("--balanced-batches", action="store_true",
                   help="draw every class equally often in training batches (for skewed tasks, e.g. contrast)")
    p.add_argument("--allow-slab-split", action="store_true",
                   help="run on a single-subject slab split (e.g. head-ct), reported as not subject-independent")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for generation and classifiers (default cpu)")
    p.add_argument("--no-write", action="store_true", help="write only into --out (not the model folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.synthetic is not None and args.truncation != 1.0:
        p.error("--truncation does not apply with --synthetic: the dataset's images have their own ψ")
    if args.synthetic is not None:  # a study of a prepared dataset describes that data, not the model
        args.no_write = True
    if args.seeds < 3:
        p.error("--seeds must be at least 3 (a 95 % interval over fewer seeds is not informative)")
    if args.threads < 1 or args.batch_size < 2 or (args.steps is not None and args.steps < 1):
        p.error("--threads >= 1, --batch-size >= 2 and --steps >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        target = resolve_model(args.model, device=args.device, local_only=True)
        gen = target.generator
        tdata = dict(gen.config.training_data)
        source = args.data or args.dataset or tdata.get("name")
        if not source:
            raise DownstreamError("the model does not record its dataset: give --data FILE.npz|DIR or --dataset NAME")
        if args.data and not Path(args.data).exists():
            raise DownstreamError(f"dataset not found: {args.data}")
        task, ds = load_task(args.task, source, gen.config.generator.resolution, task_axes(args.task, tdata))
        command = shlex.join(["python", "-m", "training.downstream", *with_option(argv, "--data", task.source)])
        leakage = leakage_check(tdata, ds, task, tuple(tdata.get("axes") or (2,)), args.allow_slab_split)
        print(f"leakage check: {leakage['message']}", file=sys.stderr)
        synthetic = None if args.synthetic is None else read_synthetic(
            args.synthetic, gen.config.id, weights_revision(target.folder), gen.config.generator.resolution)
        report = run_study(gen, task, settings_from(args), leakage,
                           model_folder=None if args.no_write else target.folder, command=command,
                           synthetic=synthetic)
    except MedganError as exc:  # LeakageError and DownstreamError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["figure"] = "downstream.png"
    written = [plot(report, args.out / "downstream.png"), write_json(args.out / "downstream.json", report)]
    if not args.no_write:
        written += write_model_folder(target.folder, report)
    print(summary_text(report))
    for path in written:
        print(f"wrote {path}")
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """The study's settings from the command line (--quick: the CNN alone, QUICK_STEPS per regime)."""
    if args.classifier is None:
        classifiers = ["cnn"] if args.quick else list(CLASSIFIERS)
    else:
        classifiers = list(CLASSIFIERS) if args.classifier == "both" else [args.classifier]
    steps = {c: args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS[c]) for c in classifiers}
    return Settings(seeds=[args.seed + i for i in range(args.seeds)], classifiers=classifiers, steps=steps,
                    batch_size=args.batch_size, lr=args.lr, threads=args.threads, device=args.device,
                    truncation=args.truncation, quick=args.quick, init=args.init, progress=not args.quiet,
                    balanced=args.balanced_batches)


def write_model_folder(folder: Path, report: dict[str, Any]) -> list[Path]:
    """downstream.json beside the model, its summary in config.json and the card re-rendered."""
    written = [write_json(folder / "downstream.json", report)]
    try:
        written += [folder / "config.json", record_metrics(folder, {"downstream": config_summary(report)})]
    except Exception as exc:  # the study's results are written; a card problem must not hide them
        print(f"warning: config.json and the card were not updated: {type(exc).__name__}: {exc}", file=sys.stderr)
    return written
