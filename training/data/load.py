"""`load_dataset`: a built-in by name (cached), a saved .npz or dataset folder, or files ingested in place
(pseudonymised)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from . import pseudonyms as P
from .builtin import BUILTIN_DATASETS, build_builtin
from .dataset import DatasetError, SliceDataset, check_axes, check_size, pseudonymise
from .ingest import PIPELINE_VERSION, ingest
from .lazy import ShardImages, pixels_sha256, resize_images
from .shards import is_dataset_folder, open_shards


def cache_dir() -> Path:
    root = os.environ.get("MEDGAN_CACHE_DIR") or Path.home() / ".cache" / "medgan"
    return Path(root).expanduser() / "datasets"


def load_dataset(name_or_path: str, size: int, *, axes: Iterable[int] = (2,), cache: bool = True) -> SliceDataset:
    """A built-in by name (cached as npz, rebuilt when missing), a saved .npz, a dataset folder (training.data.shards;
    its images read on demand), or a folder/file to ingest."""
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
    if p.is_dir() and is_dataset_folder(p):  # images stay on disk, read as they are indexed
        return _adapt(open_shards(p), size, axes, p.name)
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
    if source in BUILTIN_DATASETS:
        return source
    return P.recorded_name(str(ds.meta.get("dataset") or ds.meta.get("name") or ""), bool(ds.meta.get("public")),
                           pixels_sha256(ds.train().images))


def keys_for(data: str | Path) -> Path:
    """Where the pseudonym keys of a dataset live: `<name>.keys.json` beside a .npz or dataset folder; for a folder
    or file ingested in place (training/evaluating on it directly), in MEDGAN_CACHE_DIR/keys (one key for all of
    those)."""
    import hashlib

    p = Path(str(data)).expanduser()
    if p.name.endswith(".npz") or is_dataset_folder(p):
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
        if isinstance(ds.images, ShardImages):  # resized as each image is read, the same way
            ds.images = ds.images.resized(size)
        else:
            ds.images = resize_images(ds.images, size)
        ds.meta = {**ds.meta, "resized_from": int(ds.meta.get("size", 0)) or None, "size": size}
    return ds
