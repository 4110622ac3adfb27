"""A dataset of square uint8 slices (.npz): the arrays, their labels, saving, loading and pseudonymisation."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from medgan.errors import MedganError
from medgan.files import atomic_path

from . import pseudonyms as P
from .labels import LABEL_KINDS, LEVEL_BANDS, LEVEL_NAMES, PLANES
from .lazy import ShardImages

ARRAYS = ("images", "source", "subject", "axis", "index", "split")
OPTIONAL_ARRAYS = {"level": -1}  # absent in older files: filled with this value on load


class DatasetError(MedganError, ValueError):
    """No usable data, bad options, or a built-in dataset that is not installed."""


@dataclass
class SliceDataset:
    images: np.ndarray   # uint8 [n, 1, N, N] (a sharded dataset: ShardImages, read on demand)
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
        """The rows `mask` selects; a sharded dataset's images stay on disk (ShardImages.subset)."""
        images = self.images.subset(mask) if isinstance(self.images, ShardImages) else self.images[mask]
        return SliceDataset(images, *(getattr(self, a)[mask] for a in ARRAYS[1:]), meta=dict(self.meta),
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
        user files is pseudonymised first (see training.data.pseudonyms): `<name>.keys.json` is written beside it
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


def pseudonymise(ds: SliceDataset, keys: "P.Keys") -> SliceDataset:
    """A copy of `ds` whose subjects and file ids (arrays and meta: sources, skipped, templates, warnings) are
    keyed pseudonyms from `keys`; the identifiers the files carried are recorded in `keys` (save it)."""
    import copy

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
    meta["skipped"] = pseudonymise_skipped(meta.get("skipped", []), files)
    meta["templates"] = [subj.get(t) or keys.subject(t) for t in meta.get("templates", [])]
    meta.update(warnings=pseudonymise_warnings(meta.get("warnings", []), subj), pseudonymised=True,
                pseudonyms=pseudonyms_note(keys))
    source = np.array([files[f] for f in ds.source.tolist()], dtype=str)
    subject = np.array([subj[s] for s in ds.subject.tolist()], dtype=str)
    return SliceDataset(ds.images, source, subject, ds.axis, ds.index, ds.split, meta=meta, level=ds.level)


def pseudonymise_warnings(warnings: list[str], subjects: Mapping[str, str]) -> list[str]:
    """The split's warnings with a lone subject, named as "(ID)", replaced by its pseudonym."""
    import re

    out = []
    for text in warnings:
        for original in sorted(subjects, key=len, reverse=True):
            text = re.sub(rf"\({re.escape(original)}\)", f"({subjects[original]})", text)
        out.append(text)
    return out


def pseudonyms_note(keys: "P.Keys") -> dict:
    """meta["pseudonyms"] of a pseudonymised dataset: how, and which keys file (its name only) holds the key."""
    return {"method": "HMAC-SHA256 keyed hash, truncated (training.data.pseudonyms)", "keys_file": keys.path.name,
            "note": "the key and mapping stay local; never published"}


def pseudonymise_skipped(skipped: list[dict], files: Mapping[str, str]) -> list[dict]:
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


def check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= int(size) <= 1024:
        raise DatasetError(f"size must be an integer from 8 to 1024, got {size!r}")
    return int(size)


def check_axes(axes) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(int(a) for a in axes)
    if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
        raise DatasetError(f"axes must be distinct values from 0, 1, 2 (sagittal, coronal, axial), got {axes}")
    return axes
