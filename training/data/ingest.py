"""Ingestion: files and folders -> a split SliceDataset (readers, slicing, subject split, level labels)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import readers as R
from . import slicing as S
from .dataset import DatasetError, SliceDataset, check_axes, check_size
from .labels import LABEL_DOCS, level_bands

PIPELINE_VERSION = 2  # bump when preprocessing changes: cached built-ins are keyed by it


def ingest(inputs: Sequence[str | Path] | str | Path, size: int, *, axes: Iterable[int] = (2,),
           heldout: float = 0.2, seed: int = 0, window: tuple[float, float] | None = None,
           square: str = "pad", percentiles: tuple[float, float] = (0.5, 99.5),
           min_foreground: float = 0.08, foreground_level: float = 0.1, slab_gap: int = 4,
           subjects: Mapping[str, str] | None = None, licences: Mapping[str, str] | None = None,
           name: str = "custom", progress: bool = True, templates: Iterable[str] = (),
           public: bool = False, contrasts: Mapping[str, str] | None = None) -> SliceDataset:
    """Read files/folders into a split SliceDataset; skipped files are in `.skipped` / meta["skipped"].

    `subjects` / `licences` / `contrasts` map a file id (see meta["sources"]) or the path as given to a subject
    id / licence text / contrast name (the "contrast" label). `templates`: subjects that are averages of many
    people (trained on, never held out).
    `public`: the files are a public dataset whose names may be published (built-ins); otherwise the result
    holds the ORIGINAL subject ids and file paths in memory, meta says `"public": false, "pseudonymised": false`,
    and `save()` / `load_dataset` pseudonymise it before anything is written or trained on.
    Raises DatasetError when nothing usable is found.
    """
    opts = SliceOptions(check_size(size), check_axes(axes), tuple(window) if window else None, square,
                        tuple(percentiles), min_foreground, foreground_level)
    _check_split_options(heldout, square)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    named = {"subject": dict(subjects or {}), "licence": dict(licences or {}), "contrast": dict(contrasts or {})}
    files, skipped = S.collect_files(inputs)
    read = _read_files(files, skipped, named, progress, opts)
    rows, sources = read.rows, read.sources
    if not rows["images"]:
        raise no_slices(inputs, len(files), skipped)
    split = SplitOptions(heldout, seed, slab_gap, tuple(templates))
    split_of = split_rows(rows, sources, bool(contrasts), split)
    source = np.array(rows["source"])
    ds = SliceDataset(np.stack(rows["images"])[:, None], source, np.array(rows["subject"]),
                      np.array(rows["axis"], np.int8), np.array(rows["index"], np.int32), split_of.split,
                      level=level_bands(source, np.array(rows["axis"], np.int8),
                                        np.array(rows["pos"], np.float64))).subset(split_of.keep)
    ds.identifiers = read.identifiers
    ds.meta = dataset_meta(ds, name, public, opts, split, split_of, sources, skipped, len(files),
                           read.dropped_empty, bool(contrasts))
    return ds


@dataclass(frozen=True)
class SliceOptions:
    """How slices are cut and normalised (training.data.slicing.file_slices); picklable for worker processes."""
    size: int
    axes: tuple[int, ...]
    window: tuple[float, float] | None = None
    square: str = "pad"
    percentiles: tuple[float, float] = (0.5, 99.5)
    min_foreground: float = 0.08
    foreground_level: float = 0.1


@dataclass(frozen=True)
class SplitOptions:
    heldout: float = 0.2
    seed: int = 0
    slab_gap: int = 4
    templates: tuple[str, ...] = ()


@dataclass
class SplitResult:
    """What the split rule decided per row: split label, kept (slab gaps drop rows), the mode and its notes."""
    split: np.ndarray
    keep: np.ndarray
    mode: str
    warnings: list[str]
    by_contrast: dict


def no_slices(inputs, found: int, skipped: list[dict]) -> DatasetError:
    shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5]) or "no files found"
    return DatasetError(f"no usable slices in {', '.join(map(str, inputs))} "
                        f"({found} files read, {len(skipped)} skipped: {shown})")


def dataset_meta(ds: SliceDataset, name: str, public: bool, opts: SliceOptions, split: SplitOptions,
                 split_of: SplitResult, sources: list[dict], skipped: list[dict], files_found: int,
                 dropped_empty: int, contrasts: bool) -> dict:
    """The meta of a dataset ingested from files (the .npz's `meta`, a shard folder's dataset.json "meta")."""
    per_axis = {str(a): int((ds.axis == a).sum()) for a in sorted(set(ds.axis.tolist()))}
    train, held = ds.split == "train", ds.split == "heldout"
    return {
        "dataset": name, "name": name, "public": bool(public), **({} if public else {"pseudonymised": False}),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pipeline_version": PIPELINE_VERSION, "size": opts.size, "axes": list(opts.axes), "square": opts.square,
        "window": list(opts.window) if opts.window else None, "percentiles": list(opts.percentiles),
        "min_foreground": opts.min_foreground, "foreground_level": opts.foreground_level,
        "split": split_of.mode, "heldout_fraction": float(split.heldout), "seed": int(split.seed),
        "slab_gap": split.slab_gap, "split_rule": S.SPLIT_RULES[split_of.mode],
        **({"split_by_contrast": split_of.by_contrast} if split_of.by_contrast else {}),
        "warnings": split_of.warnings, "sources": sources, "skipped": skipped,
        "templates": sorted(set(split.templates)),
        "labels": {kind: text for kind, text in LABEL_DOCS.items() if kind != "contrast" or contrasts},
        "counts": {"files_found": files_found, "files_read": len(sources), "files_skipped": len(skipped),
                   "slices": len(ds), "train": int(train.sum()), "heldout": int(held.sum()), "per_axis": per_axis,
                   "dropped_empty": dropped_empty, "dropped_gap": int((~split_of.keep).sum()),
                   "subjects": len(set(ds.subject.tolist())),
                   "train_subjects": len(set(ds.subject[train].tolist())),
                   "heldout_subjects": len(set(ds.subject[held].tolist()))},
    }


@dataclass
class _Read:
    """What reading the files gave: slice rows, one `sources` entry per file kept, near-empty slices dropped,
    and the identifiers each subject's files carried (DICOM PatientName…)."""
    rows: dict[str, list] = field(default_factory=lambda: {k: [] for k in ("images", "source", "subject", "axis",
                                                                            "index", "pos", "thick")})
    sources: list[dict] = field(default_factory=list)
    dropped_empty: int = 0
    identifiers: dict[str, dict] = field(default_factory=dict)


@dataclass
class FileResult:
    """One file read and sliced: its kept slices [(uint8 image, axis, index, pos, thick)] under its subject, its
    `sources` entry, or why it was skipped; near-empty slices dropped; identifiers it carried."""
    fid: str
    subject: str = ""
    kept: list = field(default_factory=list)
    source: dict | None = None
    skipped: dict | None = None
    dropped_empty: int = 0
    identifiers: dict = field(default_factory=dict)


def read_one(path: Path, fid: str, given: str, named: Mapping[str, Mapping[str, str]],
             opts: SliceOptions) -> FileResult:
    """Read and slice one file; a file that cannot be used gives a result with `skipped` set (its reason)."""
    try:
        item = R.read_file(path)
        kept, total = S.file_slices(item, opts.size, opts.axes, opts.window, opts.square, opts.percentiles,
                                    opts.min_foreground, opts.foreground_level)
    except R.SkipFile as exc:
        return FileResult(fid, skipped={"file": fid, "reason": _quote_as_id(str(exc), path, fid)})
    except Exception as exc:  # a reader bug or odd file must not end the whole run
        text = _quote_as_id(str(exc), path, fid)[:160]
        return FileResult(fid, skipped={"file": fid, "reason": f"unexpected error ({type(exc).__name__}: {text})"})
    if not kept:
        return FileResult(fid, dropped_empty=total, skipped={
            "file": fid, "reason": f"all {total} slices near-empty (< {opts.min_foreground:.0%} of pixels above "
                                   f"{opts.foreground_level:g} after normalisation)"})
    source = _source_entry(item, len(kept), (fid, str(path), given), named)
    return FileResult(fid, source["subject"], kept, source, dropped_empty=total - len(kept),
                      identifiers=dict(item.identifiers or {}))


def _read_files(files: list, skipped: list[dict], named: Mapping[str, Mapping[str, str]], progress: bool,
                opts: SliceOptions) -> _Read:
    """Each file read and sliced; a file that cannot be used goes to `skipped` with its reason."""
    from tqdm.auto import tqdm

    read = _Read()
    for path, fid, given in tqdm(files, desc="reading", unit="file", disable=not progress):
        one = read_one(path, fid, given, named, opts)
        read.dropped_empty += one.dropped_empty
        if one.skipped:
            skipped.append(one.skipped)
            continue
        for img, ax, k, pos, thick in one.kept:
            for key, val in zip(("images", "axis", "index", "pos", "thick"), (img, ax, k, pos, thick)):
                read.rows[key].append(val)
            read.rows["source"].append(fid)
            read.rows["subject"].append(one.subject)
        read.sources.append(one.source)
        if one.identifiers:
            read.identifiers.setdefault(one.subject, {}).update(one.identifiers)
    return read


def split_rows(rows: Mapping[str, Sequence], sources: list[dict], by_contrast: bool,
               opts: SplitOptions) -> SplitResult:
    """The split of the rows (training.data.slicing's rules; rows: subject, source, axis, pos, thick per slice).
    With contrasts, each is split on its own: a greedy split over all subjects could hold out every subject of
    a rare one."""
    subject, axis = np.array(rows["subject"]), np.array(rows["axis"], np.int8)
    pos, thick = np.array(rows["pos"], np.float64), np.array(rows["thick"], np.float64)
    args = (float(opts.heldout), int(opts.seed), opts.slab_gap)
    if by_contrast:
        by_source = {src["id"]: src.get("contrast", "") for src in sources}
        group = np.array([by_source[f] for f in rows["source"]])
        split, keep, mode, warnings, modes = S.assign_split_by(group, subject, axis, pos, thick, *args,
                                                               templates=set(opts.templates))
        return SplitResult(split, keep, mode, warnings, modes)
    split, keep, mode, warnings = S.assign_split(subject, axis, pos, thick, *args, templates=set(opts.templates))
    return SplitResult(split, keep, mode, warnings, {})


def _quote_as_id(message: str, path: Path, fid: str) -> str:
    """A reader's message with the file's path (as read, or absolute) replaced by its file id, which
    pseudonymisation then replaces in turn (nibabel's errors quote the path)."""
    for form in sorted({str(path), str(Path(path).resolve())}, key=len, reverse=True):
        message = message.replace(form, fid)
    return message


def _check_split_options(heldout: float, square: str) -> None:
    if not 0.0 <= float(heldout) < 1.0:
        raise DatasetError(f"heldout must be in [0, 1), got {heldout}")
    if square not in ("pad", "crop"):
        raise DatasetError(f"square must be 'pad' or 'crop', got {square!r}")


def _source_entry(item: "R.Item", slices: int, keys: tuple[str, str, str],
                  named: Mapping[str, Mapping[str, str]]) -> dict:
    """A file's `sources` entry (its subject included). `named`: subject / licence / contrast looked up by `keys`:
    the file id, then its path, then the input given (its folder, for a folder)."""
    fid = keys[0]
    given_as = {kind: next((table[k] for k in keys if k in table), None) for kind, table in named.items()}
    subject = given_as["subject"] or item.subject or S.subject_from_path(fid) or fid
    return {"id": fid, "subject": subject, "kind": item.kind, "slices": slices,
            "licence": given_as["licence"] or "unknown (user-supplied data)",
            **({"contrast": given_as["contrast"]} if given_as["contrast"] else {}),
            **({"notes": item.notes} if item.notes else {})}
