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
    size, axes = check_size(size), check_axes(axes)
    _check_split_options(heldout, square)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    named = {"subject": dict(subjects or {}), "licence": dict(licences or {}), "contrast": dict(contrasts or {})}
    files, skipped = S.collect_files(inputs)
    read = _read_files(files, skipped, named, progress, size, axes, window, square, percentiles, min_foreground,
                       foreground_level)
    rows, sources, dropped_empty = read.rows, read.sources, read.dropped_empty
    if not rows["images"]:
        shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5]) or "no files found"
        raise DatasetError(f"no usable slices in {', '.join(map(str, inputs))} "
                           f"({len(files)} files read, {len(skipped)} skipped: {shown})")
    subject, axis, pos = np.array(rows["subject"]), np.array(rows["axis"], np.int8), np.array(rows["pos"], np.float64)
    split, keep, mode, warnings, split_modes = _split(rows, sources, bool(contrasts), heldout, seed, slab_gap,
                                                     templates)
    source = np.array(rows["source"])
    ds = SliceDataset(np.stack(rows["images"])[:, None], source, subject, axis, np.array(rows["index"], np.int32),
                      split, level=level_bands(source, axis, pos)).subset(keep)
    ds.identifiers = read.identifiers
    per_axis = {str(a): int((ds.axis == a).sum()) for a in sorted(set(ds.axis.tolist()))}
    ds.meta = {
        "dataset": name, "name": name, "public": bool(public), **({} if public else {"pseudonymised": False}),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pipeline_version": PIPELINE_VERSION, "size": size, "axes": list(axes), "square": square,
        "window": list(window) if window else None, "percentiles": list(percentiles),
        "min_foreground": min_foreground, "foreground_level": foreground_level,
        "split": mode, "heldout_fraction": float(heldout), "seed": int(seed), "slab_gap": slab_gap,
        "split_rule": S.SPLIT_RULES[mode], **({"split_by_contrast": split_modes} if split_modes else {}),
        "warnings": warnings, "sources": sources, "skipped": skipped,
        "templates": sorted(set(templates)),
        "labels": {kind: text for kind, text in LABEL_DOCS.items() if kind != "contrast" or contrasts},
        "counts": {"files_found": len(files), "files_read": len(sources), "files_skipped": len(skipped),
                   "slices": len(ds), "train": int((ds.split == "train").sum()),
                   "heldout": int((ds.split == "heldout").sum()), "per_axis": per_axis,
                   "dropped_empty": dropped_empty, "dropped_gap": int((~keep).sum()),
                   "subjects": len(set(ds.subject.tolist())),
                   "train_subjects": len(set(ds.subject[ds.split == "train"].tolist())),
                   "heldout_subjects": len(set(ds.subject[ds.split == "heldout"].tolist()))},
    }
    return ds


@dataclass
class _Read:
    """What reading the files gave: slice rows, one `sources` entry per file kept, near-empty slices dropped,
    and the identifiers each subject's files carried (DICOM PatientName…)."""
    rows: dict[str, list] = field(default_factory=lambda: {k: [] for k in ("images", "source", "subject", "axis",
                                                                            "index", "pos", "thick")})
    sources: list[dict] = field(default_factory=list)
    dropped_empty: int = 0
    identifiers: dict[str, dict] = field(default_factory=dict)


def _read_files(files: list, skipped: list[dict], named: Mapping[str, Mapping[str, str]], progress: bool, size: int,
                axes: tuple[int, ...], window, square, percentiles, min_foreground, foreground_level) -> _Read:
    """Each file read and sliced; a file that cannot be used goes to `skipped` with its reason."""
    from tqdm.auto import tqdm

    read = _Read()
    for path, fid, given in tqdm(files, desc="reading", unit="file", disable=not progress):
        try:
            item = R.read_file(path)
            kept, total = S.file_slices(item, size, axes, window, square, percentiles, min_foreground, foreground_level)
        except R.SkipFile as exc:
            skipped.append({"file": fid, "reason": _quote_as_id(str(exc), path, fid)})
            continue
        except Exception as exc:  # a reader bug or odd file must not end the whole run
            text = _quote_as_id(str(exc), path, fid)[:160]
            skipped.append({"file": fid, "reason": f"unexpected error ({type(exc).__name__}: {text})"})
            continue
        read.dropped_empty += total - len(kept)
        if not kept:
            skipped.append({"file": fid, "reason": f"all {total} slices near-empty (< {min_foreground:.0%} of "
                                                   f"pixels above {foreground_level:g} after normalisation)"})
            continue
        read.sources.append(_append_slices(read.rows, kept, item, (fid, str(path), given), named))
        if item.identifiers:
            read.identifiers.setdefault(read.sources[-1]["subject"], {}).update(item.identifiers)
        del item
    return read


def _split(rows: dict[str, list], sources: list[dict], by_contrast: bool, heldout: float, seed: int, slab_gap: int,
           templates: Iterable[str]) -> tuple:
    """(split, keep, mode, warnings, per-contrast modes) of the rows (training.data.slicing's rules). With contrasts,
    each is split on its own: a greedy split over all subjects could hold out every subject of a rare one."""
    subject, axis = np.array(rows["subject"]), np.array(rows["axis"], np.int8)
    pos, thick = np.array(rows["pos"], np.float64), np.array(rows["thick"], np.float64)
    args = (float(heldout), int(seed), slab_gap)
    if by_contrast:
        by_source = {src["id"]: src.get("contrast", "") for src in sources}
        group = np.array([by_source[f] for f in rows["source"]])
        return S.assign_split_by(group, subject, axis, pos, thick, *args, templates=set(templates))
    return (*S.assign_split(subject, axis, pos, thick, *args, templates=set(templates)), {})


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


def _append_slices(rows: dict[str, list], kept: list, item: "R.Item", keys: tuple[str, str, str],
                   named: Mapping[str, Mapping[str, str]]) -> dict:
    """Add one file's kept slices to `rows` under its subject; returns the file's `sources` entry. `named`:
    subject / licence / contrast looked up by `keys`: the file id, then its path, then the input given (its
    folder, for a folder)."""
    fid = keys[0]
    given_as = {kind: next((table[k] for k in keys if k in table), None) for kind, table in named.items()}
    subject = given_as["subject"] or item.subject or S.subject_from_path(fid) or fid
    for img, ax, k, pos, thick in kept:
        for key, val in zip(("images", "axis", "index", "pos", "thick"), (img, ax, k, pos, thick)):
            rows[key].append(val)
        rows["source"].append(fid)
        rows["subject"].append(subject)
    return {"id": fid, "subject": subject, "kind": item.kind, "slices": len(kept),
            "licence": given_as["licence"] or "unknown (user-supplied data)",
            **({"contrast": given_as["contrast"]} if given_as["contrast"] else {}),
            **({"notes": item.notes} if item.notes else {})}
