"""Ingestion into a dataset folder (training.data.shards): files read by worker processes, slices streamed into
shards as they come, resumable.

Memory: the parent holds one shard buffer, the files in flight (a bounded window of `FILES_PER_TASK x
IN_FLIGHT_PER_WORKER x workers`) and the per-slice labels (a few numbers and two short names per slice); never
the images of the whole set.

Resuming: a file is finished once the shard holding its last slice is written (its `sources` or `skipped`
entry is recorded in that shard's rows file). A re-run reads the rows files, skips finished files, re-reads a
file whose first slices were written before the stop and keeps only the slices not yet written (slicing is
deterministic), and appends shards after the last complete one. So a kill at any point leaves neither a
duplicate nor a missing slice.

The split: images carry no split; the index table, written once every file is read, does. It is decided
before that by the rule of an .npz (training.data.slicing.assign_split over the original subject ids, which
the keys file maps back), from the slices' labels alone, so both forms of the same input get the same split.
"""
from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import pseudonyms as P
from . import slicing as S
from .dataset import DatasetError, SliceDataset, pseudonymise_skipped, pseudonymise_warnings, pseudonyms_note
from .ingest import (FileResult, SliceOptions, SplitOptions, _check_split_options, dataset_meta, no_slices,
                     read_one, split_rows)
from .labels import level_bands
from .lazy import ShardImages
from .shards import (SHARD_SIZE, ShardWriter, committed_shards, finish_folder, is_dataset_folder, read_info,
                     shard_file, write_info, FORMAT, VERSION)

ROW_FIELDS = ("source", "subject", "axis", "index", "pos", "thick")
NO_NAMES = {"subject": {}, "licence": {}, "contrast": {}}  # the CLI names no subjects, licences or contrasts
# A worker's task is a chunk of files: with one file a task, the pool's messages cost the parent about as much CPU
# as storing the slices, and two workers were no faster than one.
FILES_PER_TASK = 16
IN_FLIGHT_PER_WORKER = 2  # chunks submitted ahead of the one being stored: keeps workers busy, memory bounded


@dataclass
class _State:
    """What the folder holds so far: one entry per stored slice, the finished files' entries."""
    rows: dict[str, list] = field(default_factory=lambda: {k: [] for k in ("shard", "row", *ROW_FIELDS)})
    sources: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    dropped_empty: int = 0
    finished: set[str] = field(default_factory=set)        # file pseudonyms
    written: dict[str, int] = field(default_factory=dict)  # file pseudonym -> slices stored

    def add_row(self, shard: int, row: int, **values) -> None:
        self.rows["shard"].append(shard)
        self.rows["row"].append(row)
        for key in ROW_FIELDS:
            self.rows[key].append(values[key])
        self.written[values["source"]] = self.written.get(values["source"], 0) + 1

    def add_record(self, record: dict) -> None:
        """A written shard's rows file."""
        rows = record["rows"]
        for i in range(record["slices"]):
            self.add_row(record["shard"], i, **{key: rows[key][i] for key in ROW_FIELDS})
        self.sources += record["sources"]
        self.skipped += record["skipped"]
        self.dropped_empty += record["dropped_empty"]
        self.finished |= {e["id"] for e in record["sources"]} | {e["file"] for e in record["skipped"]}


def ingest_to_folder(inputs: Sequence[str | Path], out: str | Path, opts: SliceOptions, split: SplitOptions, *,
                     workers: int = 1, shard_size: int = SHARD_SIZE, key_from: str | Path | None = None,
                     progress: bool = True, name: str = "custom") -> Path:
    """Ingest user files into the dataset folder `out` (new, or a stopped ingestion of the same files and
    settings, which resumes); pseudonymised, the keys file beside it. Returns the folder."""
    _check_split_options(split.heldout, opts.square)
    if not isinstance(workers, int) or workers < 1 or not isinstance(shard_size, int) or shard_size < 1:
        raise DatasetError(f"workers and shard size must be integers >= 1, got {workers!r} and {shard_size!r}")
    out = Path(out)
    files, missing = S.collect_files(inputs)
    keys = P.Keys.open(P.keys_path(out), key_from)
    settings = _settings(opts, split, shard_size, files, keys)
    if _prepare(out, settings):
        return out  # complete already: nothing to do
    state = _State()
    for record in committed_shards(out):
        state.add_record(record)
    writer = ShardWriter(out, shard_size, opts.size, start=len(set(state.rows["shard"])), before_commit=keys.save)
    todo = [f for f in files if keys.file(f[1]) not in state.finished]
    with _no_cyclic_gc():
        for result in _results(todo, opts, workers, progress):
            _store(result, writer, keys, state)
    writer.commit()
    keys.save()
    if not state.rows["source"]:
        raise no_slices(inputs, len(files), missing + state.skipped)
    _finish(out, state, keys, missing, (opts, split, settings, len(files), name))
    return out


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while files stream in: what the loop allocates holds no cycles, and the
    collector's passes over everything imported before (torch included) took about a sixth of the parent's CPU
    (2,000 files: 0.86–1.0 CPU-s with it, 0.74 without), which the workers need."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _settings(opts: SliceOptions, split: SplitOptions, shard_size: int, files: list, keys: "P.Keys") -> dict:
    """What must agree for a re-run to resume; the files as a keyed hash of their ids (no names on disk)."""
    return {"size": opts.size, "axes": list(opts.axes), "window": list(opts.window) if opts.window else None,
            "square": opts.square, "percentiles": list(opts.percentiles), "min_foreground": opts.min_foreground,
            "foreground_level": opts.foreground_level, "heldout": float(split.heldout), "seed": int(split.seed),
            "slab_gap": split.slab_gap, "shard_size": shard_size, "files": len(files),
            "files_hash": P.keyed_hash(keys.key, "inputs", "\n".join(f[1] for f in files))[:24]}


def _prepare(out: Path, settings: dict) -> bool:
    """Create the folder (dataset.json "complete": false) or check a folder of this format holds the same
    ingestion; True when that one is complete."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file; a dataset folder needs a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not is_dataset_folder(out):
        raise DatasetError(f"--out {out} is not empty and holds no dataset; give a new or empty folder")
    if is_dataset_folder(out):
        info = read_info(out)
        old = info.get("settings") or {}
        diff = [f"{k}: {old.get(k)!r} there, {v!r} now" for k, v in settings.items() if old.get(k) != v]
        if diff:
            raise DatasetError(f"{out} holds another ingestion ({'; '.join(diff)}); use another --out, or the "
                               "same inputs and options to resume")
        return bool(info.get("complete"))
    out.mkdir(parents=True, exist_ok=True)
    write_info(out, {"format": FORMAT, "version": VERSION, "complete": False, "settings": settings})
    return False


def _results(todo: list, opts: SliceOptions, workers: int, progress: bool) -> Iterator[FileResult]:
    """read_one of each file, in order: in this process, or in `workers` processes with a bounded window of
    chunks of FILES_PER_TASK files."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="reading", unit="file", disable=not progress)
    try:
        if workers == 1 or len(todo) < 2:
            for path, fid, given in todo:
                yield read_one(path, fid, given, NO_NAMES, opts)
                bar.update()
            return
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")  # fork: no re-import per worker
        chunks = (todo[i:i + FILES_PER_TASK] for i in range(0, len(todo), FILES_PER_TASK))
        with ctx.Pool(min(workers, len(todo))) as pool:
            pending: deque = deque()
            for _ in range(workers * IN_FLIGHT_PER_WORKER):
                _submit(pool, pending, chunks, opts)
            while pending:
                results = pending.popleft().get()
                _submit(pool, pending, chunks, opts)
                for result in results:
                    bar.update()
                    yield result
    finally:
        bar.close()


def _read_chunk(files: list, opts: SliceOptions) -> list[FileResult]:
    return [read_one(path, fid, given, NO_NAMES, opts) for path, fid, given in files]


def _submit(pool, pending: deque, chunks: Iterator, opts: SliceOptions) -> None:
    nxt = next(chunks, None)
    if nxt is not None:
        pending.append(pool.apply_async(_read_chunk, (nxt, opts)))


def _store(result: FileResult, writer: ShardWriter, keys: "P.Keys", state: _State) -> None:
    """One file's slices into the shards (those not written before a stop) and its entry into the record."""
    fid = keys.file(result.fid)
    writer.note("dropped_empty", result.dropped_empty)
    state.dropped_empty += result.dropped_empty
    if result.skipped:
        entry = pseudonymise_skipped([result.skipped], {result.fid: fid})[0]
        writer.note("skipped", entry)
        state.skipped.append(entry)
        return
    subject = keys.subject(result.subject)
    if result.identifiers:
        keys.note_identifiers(subject, {"subject id": result.subject, **result.identifiers})
    for img, ax, k, pos, thick in result.kept[state.written.get(fid, 0):]:
        values = {"source": fid, "subject": subject, "axis": int(ax), "index": int(k), "pos": float(pos),
                  "thick": float(thick)}
        shard, row = writer.add(img, **values)
        state.add_row(shard, row, **values)
    entry = {**result.source, "id": fid, "subject": subject}
    writer.note("sources", entry)
    state.sources.append(entry)


def _finish(out: Path, state: _State, keys: "P.Keys", missing: list[dict], how: tuple) -> None:
    """The split (over the original subject ids), levels, meta; then the index and the complete dataset.json."""
    opts, split, settings, files_found, name = how
    rows = {key: np.asarray(values) for key, values in state.rows.items()}
    originals = np.array([keys.subjects[s] for s in state.rows["subject"]], dtype=str)
    split_of = split_rows({**rows, "subject": originals}, state.sources, False, split)
    keep = split_of.keep
    split_of.warnings = pseudonymise_warnings(split_of.warnings, {o: keys.subject(o) for o in set(originals)})
    level = level_bands(rows["source"], rows["axis"].astype(np.int8), rows["pos"].astype(np.float64))
    shards = sorted(set(state.rows["shard"]))
    images = ShardImages([out / shard_file(k) for k in shards], rows["shard"], rows["row"], opts.size)
    ds = SliceDataset(images, rows["source"].astype(str), rows["subject"].astype(str),
                      rows["axis"].astype(np.int8), rows["index"].astype(np.int32), split_of.split,
                      level=level).subset(keep)
    skipped = pseudonymise_skipped(missing, {m["file"]: keys.file(m["file"]) for m in missing}) + state.skipped
    ds.meta = dataset_meta(ds, name, False, opts, split, split_of, state.sources, skipped, files_found,
                           state.dropped_empty, False)
    ds.meta.update(pseudonymised=True, pseudonyms=pseudonyms_note(keys))
    keys.save()
    where = np.stack([rows["shard"], rows["row"]], axis=1)[keep]
    finish_folder(out, ds, where, settings)
