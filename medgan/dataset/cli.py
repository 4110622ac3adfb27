"""The command line of medgan.dataset: `python -m medgan.dataset MODEL --count N --out DIR …` (see the package
docstring); `torchrun … -m medgan.dataset` runs one rank per process."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Callable

from ..errors import InvalidArgumentError, MedganError, UnknownModelError
from ..validation import MAX_SEED, check_seed, check_truncation
from .shards import FORMATS, export_dataset


def _positive(name: str, limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"{name} must be between 1 and {limit}, got {value}")
        return value
    parse.__name__ = name
    return parse


def _checked(check: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """An argparse type from one of medgan.validation's checks (its message becomes argparse's)."""
    def parse(text: str) -> Any:
        try:
            return check(text)
        except InvalidArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m medgan.dataset",
                                description="Export a large, resumable, sharded dataset of SYNTHETIC images.")
    p.add_argument("model", help="model id (as listed by medgan) or a model folder holding config.json")
    p.add_argument("--count", type=_positive("count", 10**12), required=True, help="number of images")
    p.add_argument("--out", required=True, help="output folder (re-run the same command to resume)")
    p.add_argument("--format", choices=FORMATS, default="png",
                   help="file format (default png); parquet writes a Hugging Face dataset repo: data/*.parquet "
                        "and a dataset card README.md")
    p.add_argument("--shard-size", type=_positive("shard size", 10**9), default=1000,
                   help="images per shard folder or parquet file (default 1000)")
    p.add_argument("--seed", type=_checked(check_seed, "seed"), default=0,
                   help=f"dataset seed, 0..{MAX_SEED} (default 0)")
    p.add_argument("--workers", type=_positive("workers", 256), default=1,
                   help="processes, each writing whole shards (default 1; about one per core is fastest)")
    p.add_argument("--threads", type=_positive("threads", 256), default=1,
                   help="torch threads per process (default 1)")
    p.add_argument("--batch-size", type=_positive("batch size", 4096), default=256, help="images per forward pass")
    p.add_argument("--truncation", type=_checked(check_truncation, "truncation"), default=1.0,
                   help="truncation ψ in [0, 2] for every image (default 1 = none)")
    p.add_argument("--class", dest="image_class", default=None,
                   help="one class of a conditional model for every image (default: one drawn per image)")
    p.add_argument("--label", action="store_true", help="burn a visible SYNTHETIC label into every image")
    p.add_argument("--weights-dir", action="append", default=None, help="extra model folder(s) to search")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = export_dataset(args.model, args.count, args.out, args.format, shard_size=args.shard_size,
                                 seed=args.seed, workers=args.workers, threads=args.threads, label=args.label,
                                 truncation=args.truncation, image_class=args.image_class,
                                 batch_size=args.batch_size, extra_folders=args.weights_dir,
                                 progress=not args.quiet)
    except (InvalidArgumentError, UnknownModelError) as exc:
        parser.error(str(exc))  # exit 2
    except MedganError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(json.dumps({**asdict(summary), "images_per_minute": round(summary.images_per_minute, 1)}))
    if not summary.manifest:
        print(f"{parser.prog}: this rank is done; manifest.csv (parquet: README.md) is written when every "
              "shard is complete",
              file=sys.stderr)
    return 0
