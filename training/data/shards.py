"""A dataset folder: the same content as a dataset .npz, as image shards read on demand.

    DATASET/images-00000.npy        uint8 [m, 1, N, N], m <= shard size (np.load(..., mmap_mode="r") reads it)
    DATASET/images-00000.rows.json  what ingestion put in that shard (resuming reads it; readers do not)
    DATASET/index.parquet           one row per slice: shard, row, source, subject, split, axis, index, level,
                                    contrast; its order is the dataset's row order
    DATASET/dataset.json            format, pipeline version, shard list, the keys file's name, the .npz's meta

A shard is written under a temp name and renamed (medgan.files.atomic_path), then its rows file likewise: a shard
counts once its rows file exists. dataset.json says "complete": true only after the index is written, so a
reader never takes a folder that ingestion is still writing (or was killed writing). Subjects and file ids are
pseudonyms, as in an .npz; the keys file lies beside the folder (`DATASET.keys.json`), never inside it.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from medgan.dataset.shards import DATASET_JSON
from medgan.files import TEMP_MARK, atomic_path, atomic_write

from . import pseudonyms as P
from .dataset import DatasetError, SliceDataset, pseudonymise
from .lazy import ShardImages

FORMAT = "medgan-slice-shards"
VERSION = 1
INDEX = "index.parquet"
INDEX_COLUMNS = ("shard", "row", "source", "subject", "split", "axis", "index", "level", "contrast")
SHARD_SIZE = 1024  # slices per shard: 64 MiB at 256 px, what a shard buffer holds when one process ingests


def shard_file(k: int) -> str:
    return f"images-{k:05d}.npy"


def rows_file(k: int) -> str:
    return f"images-{k:05d}.rows.json"


def is_dataset_folder(path: str | Path) -> bool:
    """A folder this module wrote (complete or not): it holds a dataset.json of this format."""
    info = Path(path) / DATASET_JSON
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def is_folder_output(out: str | Path) -> bool:
    """`--out` names a dataset folder (anything but a .npz file)."""
    return not str(out).lower().endswith(".npz")


@dataclass(frozen=True)
class PartSlice:
    """A slice an ingestion worker wrote to a part file (raw uint8 [N, N] slices back to back): row `row`."""
    part: Path
    row: int


class ShardWriter:
    """Slices into shards of at most `shard_size`: a full shard is written when the next slice comes (so a
    file's `sources` entry, noted after its last slice, lands in the shard that holds that slice), or by
    `commit`. `before_commit` runs before each shard is written (the keys file is saved there: no pseudonym is
    on disk before its mapping).

    A slice comes as an array (copied into a buffer) or as a PartSlice: then its bytes go from the worker's part
    file to the shard in the kernel (os.copy_file_range) and never pass through this process, which is what lets
    two ingestion workers keep both cores busy. A part file is deleted once `release`d and copied."""

    def __init__(self, folder: Path, shard_size: int, side: int, start: int = 0,
                 before_commit: Callable[[], None] | None = None):
        self.folder, self.shard_size, self.side, self.k = folder, shard_size, side, start
        self.before_commit = before_commit
        self.buffer: np.ndarray | None = None  # allocated at the first array slice
        self.n = 0
        self.segments: list[list] = []  # [part file or None (the buffer), first row there, count], in shard order
        self.released: set[Path] = set()
        self.rows: dict[str, list] = {}
        self.notes: dict[str, Any] = {"sources": [], "skipped": [], "dropped_empty": 0}

    def add(self, image: np.ndarray | PartSlice, **row: Any) -> tuple[int, int]:
        """One uint8 [N, N] slice with its row fields; returns (shard, row) where it is stored."""
        if self.n == self.shard_size:
            self.commit()
        part, first = (image.part, image.row) if isinstance(image, PartSlice) else (None, self.n)
        if part is None:
            if self.buffer is None:
                self.buffer = np.empty((self.shard_size, 1, self.side, self.side), np.uint8)
            self.buffer[self.n, 0] = image
        last = self.segments[-1] if self.segments else None
        if last and last[0] == part and last[1] + last[2] == first:
            last[2] += 1
        else:
            self.segments.append([part, first, 1])
        for key, value in row.items():
            self.rows.setdefault(key, []).append(value)
        self.n += 1
        return self.k, self.n - 1

    def note(self, kind: str, entry: Any) -> None:
        """Record a finished file with this shard: a `sources` / `skipped` entry, or `dropped_empty` slices."""
        if kind == "dropped_empty":
            self.notes[kind] += int(entry)
        else:
            self.notes[kind].append(entry)

    def release(self, part: Path) -> None:
        """No more slices will come from `part`: delete it now, or once the shard using it is written."""
        if any(seg[0] == part for seg in self.segments):
            self.released.add(part)
        else:
            part.unlink(missing_ok=True)

    def commit(self) -> None:
        """Write the shard (none when empty) and its rows file; start the next shard."""
        if not self.n:
            return
        if self.before_commit:
            self.before_commit()
        with atomic_path(self.folder / shard_file(self.k)) as tmp:
            self._write(tmp)
        record = {"shard": self.k, "slices": self.n, "rows": self.rows, **self.notes}
        atomic_write(self.folder / rows_file(self.k), json.dumps(record, separators=(",", ":")))
        for part in self.released:
            part.unlink(missing_ok=True)
        self.released = set()
        self.k, self.n, self.rows, self.segments = self.k + 1, 0, {}, []
        self.notes = {"sources": [], "skipped": [], "dropped_empty": 0}

    def _write(self, path: Path) -> None:
        """The .npy: its header, then each segment from the buffer or copied from its part file."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (self.n, 1, self.side, self.side)})
        step = self.side * self.side
        with open(path, "wb", buffering=0) as fh:
            write_all(fh, header.getvalue())
            for part, first, count in self.segments:
                if part is None:
                    write_all(fh, memoryview(self.buffer[first:first + count]).cast("B"))
                else:
                    with open(part, "rb", buffering=0) as src:
                        copy_range(src, fh, first * step, count * step)


def write_all(fh: BinaryIO, data: bytes | memoryview) -> None:
    """All of `data` to an unbuffered file (a raw write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view):]


def copy_range(src: BinaryIO, dst: BinaryIO, offset: int, count: int) -> None:
    """`count` bytes of `src` from `offset` appended to `dst` at its position (both unbuffered): in the kernel
    where it can."""
    fast = hasattr(os, "copy_file_range")
    while count > 0:
        done = 0
        if fast:
            try:
                done = os.copy_file_range(src.fileno(), dst.fileno(), count, offset)
            except OSError:  # another file system, or a kernel without it
                fast = False
        if not fast:
            data = os.pread(src.fileno(), min(count, 1 << 24), offset)
            write_all(dst, data)
            done = len(data)
        if done <= 0:
            raise OSError(f"part file {Path(src.name).name} ended {count} bytes early")
        offset, count = offset + done, count - done


def committed_shards(folder: Path) -> list[dict]:
    """The rows records of the shards written so far (0, 1, … up to the first missing one); temp files an
    interrupted run left are removed, and shards after a gap (none are written out of order) too."""
    for tmp in folder.glob(f".*{TEMP_MARK}*"):
        tmp.unlink(missing_ok=True)
    records, k = [], 0
    while (folder / rows_file(k)).is_file() and (folder / shard_file(k)).is_file():
        records.append(json.loads((folder / rows_file(k)).read_text(encoding="utf-8")))
        k += 1
    for stale in [*folder.glob("images-*.npy"), *folder.glob("images-*.rows.json")]:
        if int(stale.name[len("images-"):].split(".")[0]) >= k:
            stale.unlink()
    return records


def write_index(folder: Path, columns: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: pa.array(np.asarray(columns[name]).tolist() if columns[name].dtype.kind == "U"
                                     else columns[name]) for name in INDEX_COLUMNS})
    with atomic_path(folder / INDEX) as tmp:
        pq.write_table(table, tmp)


def contrast_column(meta: dict, source: np.ndarray) -> np.ndarray:
    by_source = {s.get("id"): s.get("contrast", "") for s in meta.get("sources", [])}
    return np.array([by_source.get(f, "") for f in source.tolist()], dtype=str)


def write_info(folder: Path, info: dict) -> None:
    atomic_write(folder / DATASET_JSON, json.dumps(info, indent=1, ensure_ascii=False) + "\n")


def read_info(folder: Path) -> dict:
    try:
        info = json.loads((folder / DATASET_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {folder.name}/{DATASET_JSON}: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatasetError(f"{folder.name} is not a MedGAN dataset folder ({DATASET_JSON} of format {FORMAT!r})")
    return info


def save_shards(ds: SliceDataset, folder: str | Path, *, shard_size: int = SHARD_SIZE,
                key_from: str | Path | None = None) -> Path:
    """Write an in-memory dataset as a folder (what `SliceDataset.save` does for an .npz): pseudonymised first
    when it holds user data, the keys file beside the folder. An existing dataset folder is replaced."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not is_dataset_folder(folder):
        raise DatasetError(f"{folder} exists and is not a dataset folder; give a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    if ds.needs_pseudonyms:
        keys = P.Keys.open(P.keys_path(folder), key_from)
        ds = pseudonymise(ds, keys)
        keys.save()
    (folder / DATASET_JSON).unlink(missing_ok=True)  # incomplete until the index is written again
    for old in [*folder.glob("images-*"), folder / INDEX]:
        old.unlink(missing_ok=True)
    writer = ShardWriter(folder, shard_size, ds.size)
    where = np.array([writer.add(ds.images[i, 0]) for i in range(len(ds))], np.int64).reshape(-1, 2)
    writer.commit()
    finish_folder(folder, ds, where, {"shard_size": shard_size})
    return folder


def finish_folder(folder: Path, ds: SliceDataset, where: np.ndarray, settings: dict) -> None:
    """The index (rows of `ds` stored at `where` [(shard, row)]) and the complete dataset.json."""
    write_index(folder, {"shard": where[:, 0].astype(np.int32), "row": where[:, 1].astype(np.int32),
                         "source": ds.source.astype(str), "subject": ds.subject.astype(str),
                         "split": ds.split.astype(str), "axis": ds.axis.astype(np.int8),
                         "index": ds.index.astype(np.int32), "level": ds.level.astype(np.int8),
                         "contrast": contrast_column(ds.meta, ds.source.astype(str))})
    shards = sorted(int(p.name[len("images-"):].split(".")[0]) for p in folder.glob("images-*.npy"))
    keys_file = (ds.meta.get("pseudonyms") or {}).get("keys_file")
    write_info(folder, {"format": FORMAT, "version": VERSION, "complete": True,
                        "pipeline_version": ds.meta.get("pipeline_version"), "size": ds.size, "slices": len(ds),
                        "shards": [shard_file(k) for k in shards], "index": INDEX, "keys_file": keys_file,
                        "settings": settings, "meta": ds.meta})


def open_shards(folder: str | Path) -> SliceDataset:
    """A complete dataset folder as a SliceDataset whose images stay on disk (ShardImages)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    info = read_info(folder)
    if not info.get("complete"):
        raise DatasetError(f"{folder.name} is still being ingested (or ingestion stopped): run the same "
                           "`python -m training.data … --out` command again to finish it")
    try:
        table = pq.read_table(folder / info.get("index", INDEX), columns=list(INDEX_COLUMNS))
    except Exception as exc:
        raise DatasetError(f"cannot read {folder.name}/{INDEX}: {type(exc).__name__}: {exc}") from None
    col = {name: table.column(name).to_numpy(zero_copy_only=False) for name in INDEX_COLUMNS}
    paths = [folder / name for name in info["shards"]]
    _check_shards(folder, paths, col, int(info["size"]))
    images = ShardImages(paths, col["shard"], col["row"], int(info["size"]))
    return SliceDataset(images, col["source"].astype(str), col["subject"].astype(str), col["axis"].astype(np.int8),
                        col["index"].astype(np.int32), col["split"].astype(str), meta=dict(info.get("meta") or {}),
                        level=col["level"].astype(np.int8))


def _check_shards(folder: Path, paths: list[Path], col: dict[str, np.ndarray], size: int) -> None:
    """Every shard a uint8 [m, 1, size, size] .npy and every index row inside one: a clear error, not an
    IndexError mid-training."""
    lengths = []
    for path in paths:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read shard {folder.name}/{path.name}: {exc}") from None
        if arr.dtype != np.uint8 or arr.shape[1:] != (1, size, size):
            raise DatasetError(f"{folder.name}/{path.name}: expected uint8 [m, 1, {size}, {size}], got "
                               f"{arr.dtype} {arr.shape}")
        lengths.append(arr.shape[0])
    shard, row = col["shard"].astype(np.int64), col["row"].astype(np.int64)
    if len(shard) and (shard.min() < 0 or shard.max() >= len(paths) or row.min() < 0
                       or (row >= np.asarray(lengths)[shard]).any()):
        raise DatasetError(f"{folder.name}/{INDEX} names rows that no shard holds")
