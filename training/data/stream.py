"""Ingestion into a dataset folder (training.data.shards): files read by worker processes, slices streamed into
shards as they come, resumable.

Memory: with workers, each writes the slices of its chunk of files to a part file in the folder and sends back
only their labels; the parent copies the part files' bytes into shards in the kernel (ShardWriter, PartSlice), so
it holds no images, only the per-slice labels (a few numbers and two short names per slice). In one process, one
shard buffer. Never the images of the whole set.

Resuming: a file is finished once the shard holding its last slice is written (its `sources` or `skipped`
entry is recorded in that shard's rows file). A re-run reads the rows files, skips finished files, re-reads a
file whose first slices were written before the stop and keeps only the slices not yet written (slicing is
deterministic), and appends shards after the last complete one; part files a stopped run left (temp names) are
removed. So a kill at any point leaves neither a duplicate nor a missing slice.

The split: images carry no split; the index table, written once every file is read, does. It is decided
before that by the rule of an .npz (training.data.slicing.assign_split over the original subject ids, which
the keys file maps back), from the slices' labels alone, so both forms of the same input get the same split.
"""
from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from medgan.files import temp_path

from . import pseudonyms as P
from . import slicing as S
from .dataset import DatasetError, SliceDataset, pseudonymise_skipped, pseudonymise_warnings, pseudonyms_note
from .ingest import (FileResult, SliceOptions, SplitOptions, _check_split_options, dataset_meta, no_slices,
                     read_one, split_rows)
from .labels import level_bands
from .lazy import ShardImages
from .shards import (SHARD_SIZE, PartSlice, ShardWriter, committed_shards, finish_folder, is_dataset_folder,
                     read_info, shard_file, write_all, write_info, FORMAT, VERSION)

ROW_FIELDS = ("source", "subject", "axis", "index", "pos", "thick")
NO_NAMES = {"subject": {}, "licence": {}, "contrast": {}}  # the CLI names no subjects, licences or contrasts
# A worker's task is a chunk of files: with one file a task, the messages cost the parent about as much CPU as
# storing the slices, and two workers were no faster than one.
FILES_PER_TASK = 16
IN_FLIGHT_PER_WORKER = 4  # chunks submitted ahead of the one being stored: keeps workers busy, memory bounded


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
    writer = ShardWriter(out, shard_size, opts.size, start=len(set(state.rows["shard"])), before_commit=keys.save_new)
    todo = [f for f in files if keys.file(f[1]) not in state.finished]
    with _no_cyclic_gc():
        for results, part in _results(todo, opts, workers, progress, out):
            for result in results:
                _store(result, writer, keys, state)
            if part is not None:
                writer.release(part)
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


def _results(todo: list, opts: SliceOptions, workers: int, progress: bool,
             folder: Path) -> Iterator[tuple[list[FileResult], Path | None]]:
    """read_one of each file, in order, with the part file its slices were written to (None: they are arrays):
    a file at a time in this process, or chunks of FILES_PER_TASK files in `workers` processes, a bounded
    window of them in flight."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="reading", unit="file", disable=not progress)
    try:
        if workers == 1 or len(todo) < 2:
            for path, fid, given in todo:
                yield [read_one(path, fid, given, NO_NAMES, opts)], None
                bar.update()
            return
        chunks = [todo[i:i + FILES_PER_TASK] for i in range(0, len(todo), FILES_PER_TASK)]
        ahead = workers * IN_FLIGHT_PER_WORKER
        with _Readers(min(workers, len(chunks)), opts, folder) as readers:
            for i in range(min(ahead, len(chunks))):
                readers.send(i, chunks[i])
            for i, chunk in enumerate(chunks):
                results, part = readers.receive(i, chunk)
                if i + ahead < len(chunks):
                    readers.send(i + ahead, chunks[i + ahead])
                bar.update(len(results))
                yield results, part
    finally:
        bar.close()


class _Readers:
    """Worker processes, each with its own pipe: chunk i goes to worker i mod n and comes back from it in order.
    No helper threads here (with a multiprocessing.Pool, its three took about a third of this process' CPU: 1.9
    against 1.3 CPU-s for 10,000 files, CPU the workers need), and a worker that dies (killed, out of memory) is
    an error naming its files, not a hang as in a Pool."""

    def __init__(self, n: int, opts: SliceOptions, folder: Path):
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")  # fork: no re-import per worker
        self.procs, self.conns = [], []
        for _ in range(n):
            here, there = ctx.Pipe()
            # a forked worker closes its copies of this process' pipe ends: else, were this process killed, no
            # worker would see its pipe close, and each would wait for work for ever
            inherited = [*self.conns, here] if ctx.get_start_method() == "fork" else []
            proc = ctx.Process(target=_serve, args=(there, opts, folder, inherited), daemon=True)
            proc.start()
            there.close()
            self.procs.append(proc)
            self.conns.append(here)

    def __enter__(self) -> "_Readers":
        return self

    def send(self, i: int, chunk: list) -> None:
        self.conns[i % len(self.conns)].send(chunk)

    def receive(self, i: int, chunk: list) -> tuple[list[FileResult], Path | None]:
        k = i % len(self.conns)
        try:
            status, value = self.conns[k].recv()
        except EOFError:
            self.procs[k].join(timeout=5)
            status, value = "error", f"its worker process ended (exit code {self.procs[k].exitcode})"
        if status == "error":
            raise DatasetError(f"reading files {chunk[0][1]} … {chunk[-1][1]} failed: {value}; the slices stored so "
                               "far are kept: run the same command again to resume")
        return value

    def __exit__(self, *exc) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)  # stop
            conn.close()
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()


def _serve(conn, opts: SliceOptions, folder: Path, inherited: list) -> None:
    """A worker: chunks from `conn` until None (or the parent is gone), each answered with ("ok", _read_chunk)
    or ("error", why)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, whose closed pipe ends the workers
    for other in inherited:
        other.close()
    with contextlib.suppress(EOFError, OSError):  # the parent ended: so does this worker
        while (chunk := conn.recv()) is not None:
            try:
                answer = ("ok", _read_chunk(chunk, opts, folder))
            except Exception as exc:  # a failed part-file write (disk full): the parent reports it, stops cleanly
                answer = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(answer)


def _read_chunk(files: list, opts: SliceOptions, folder: Path) -> tuple[list[FileResult], Path | None]:
    """In a worker: the files read, their slices written to a part file in `folder` (a temp name, which a
    resumed run removes) and replaced by PartSlices, so only labels travel back to the parent."""
    results = [read_one(path, fid, given, NO_NAMES, opts) for path, fid, given in files]
    if not any(result.kept for result in results):
        return results, None
    part, row = temp_path(folder / "part.raw"), 0
    with open(part, "wb", buffering=0) as fh:
        for result in results:
            for i, (img, *labels) in enumerate(result.kept):
                write_all(fh, np.ascontiguousarray(img, np.uint8).data)
                result.kept[i] = (PartSlice(part, row), *labels)
                row += 1
    return results, part


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
