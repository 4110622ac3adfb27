"""`load_dataset`: a built-in by name (cached), a saved .npz, or files ingested in place (pseudonymised)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from . import pseudonyms as P
from .builtin import BUILTIN_DATASETS, build_builtin
from .dataset import DatasetError, SliceDataset, check_axes, check_size, pseudonymise
from .ingest import PIPELINE_VERSION, ingest


def cache_dir() -> Path:
    root = os.environ.get("MEDGAN_CACHE_DIR") or Path.home() / ".cache" / "medgan"
    return Path(root).expanduser() / "datasets"


def load_dataset(name_or_path: str, size: int, *, axes: Iterable[int] = (2,), cache: bool = True) -> SliceDataset:
    """A built-in by name (cached as npz, rebuilt when missing), a saved .npz, or a folder/file to ingest."""
    size, axes = check_size(size), check_axes(axes)
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


def recorded_name(ds: SliceDataset, source: str) -> str:
    """How `ds`, read from `source` (a built-in's name or a path), is named in what may be published
    (training.data.pseudonyms.recorded_name): a built-in or public dataset by its name, any other by the hash of
    its training split's pixels, which is what training records for it."""
    import hashlib

    if source in BUILTIN_DATASETS:
        return source
    pixels = np.ascontiguousarray(ds.train().images).tobytes()
    return P.recorded_name(str(ds.meta.get("dataset") or ds.meta.get("name") or ""), bool(ds.meta.get("public")),
                           hashlib.sha256(pixels).hexdigest())


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
