"""Images of a sharded dataset, read on demand: an array-like over memory-mapped `.npy` shards.

`ShardImages` stands where a SliceDataset holds a uint8 [n, 1, N, N] array. Indexing it (an int, a slice, an
index array or a boolean mask) returns an ordinary numpy array of just those rows, read from the shards'
memory maps, so only what is asked for reaches memory; `np.asarray(images)` reads all of them. `subset`
keeps it lazy (SliceDataset.subset / train() use it). Pickles without its open maps (DataLoader workers,
spawned processes reopen them).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

CHUNK_ROWS = 4096  # rows read at once when every row is wanted (hashing, np.asarray)


class ShardImages:
    def __init__(self, paths: Sequence[str | Path], shard: np.ndarray, row: np.ndarray, side: int,
                 resize: int | None = None):
        """`paths`: the shard files; row i of this array is row `row[i]` of shard `shard[i]`. `side`: the shards'
        image side; `resize`: a smaller side each image is resized to when read (LANCZOS, as training.data's
        load_dataset resizes an .npz built larger)."""
        self.paths = [Path(p) for p in paths]
        self.shard, self.row = np.asarray(shard, np.int32), np.asarray(row, np.int64)
        self.side, self.resize = int(side), resize
        self._maps: dict[int, np.ndarray] = {}

    # --- the array interface a SliceDataset's images need -----------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        side = self.resize or self.side
        return (len(self.row), 1, side, side)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return len(self.row)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._gather(np.array([int(key)]))[0]
        if isinstance(key, tuple):  # images[idx, 0] and the like: rows first, then the rest on the copy
            return self[key[0]][(slice(None), *key[1:])]
        return self._gather(self._positions(key))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self._gather(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def subset(self, key) -> "ShardImages":
        """The rows `key` selects, still lazy."""
        pos = self._positions(key)
        return ShardImages(self.paths, self.shard[pos], self.row[pos], self.side, self.resize)

    def resized(self, size: int) -> "ShardImages":
        return ShardImages(self.paths, self.shard, self.row, self.side, None if size == self.side else size)

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """All rows in order, `rows` at a time (hashing or scanning without holding everything)."""
        for start in range(0, len(self), rows):
            yield self._gather(np.arange(start, min(start + rows, len(self))))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    # --- reading ------------------------------------------------------------------------------------------
    def _positions(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(*key.indices(len(self)), dtype=np.int64)
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"boolean index of shape {key.shape} for {len(self)} rows")
            return np.flatnonzero(key)
        pos = np.atleast_1d(key).astype(np.int64)  # per step: no arange of the whole set
        if len(pos) and (pos.min() < -len(self) or pos.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")
        return np.where(pos < 0, pos + len(self), pos)

    def _map(self, k: int) -> np.ndarray:
        if k not in self._maps:
            self._maps[k] = np.load(self.paths[k], mmap_mode="r", allow_pickle=False)
        return self._maps[k]

    def _gather(self, pos: np.ndarray) -> np.ndarray:
        """Rows `pos` (positions in this array) as one uint8 [len(pos), 1, side, side] array, shard by shard."""
        out = np.empty((len(pos), 1, self.side, self.side), np.uint8)
        shards = self.shard[pos]
        for k in np.unique(shards):
            where = np.flatnonzero(shards == k)
            rows = self.row[pos[where]]
            order = np.argsort(rows, kind="stable")  # ascending reads: the page cache reads ahead
            out[where[order]] = self._map(int(k))[rows[order]]
        return resize_images(out, self.resize) if self.resize else out


def resize_images(images, size: int) -> np.ndarray:
    """uint8 [n, 1, N, N] images resized to `size` (antialiased LANCZOS, as when a dataset is read smaller than it
    was built)."""
    if not len(images):
        return np.empty((0, 1, size, size), np.uint8)
    return np.stack([np.asarray(Image.fromarray(im[0]).resize((size, size), Image.Resampling.LANCZOS))
                     for im in images])[:, None]


def pixels_sha256(images) -> str:
    """sha256 of the images' bytes in row order: the same digest as hashlib.sha256(array.tobytes()) of the whole
    array, computed chunk by chunk for ShardImages."""
    digest = hashlib.sha256()
    parts = images.chunks() if isinstance(images, ShardImages) else [np.ascontiguousarray(images)]
    for part in parts:
        digest.update(memoryview(np.ascontiguousarray(part)).cast("B"))
    return digest.hexdigest()
