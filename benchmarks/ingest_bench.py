"""Ingestion at scale: a synthetic DICOM corpus (scripts.dicom_corpus) into a dataset folder, and training from it.

- files/s of `ingest_to_folder(workers=2)` (training.data --out DIR --workers 2) against a plain loop: one process
  reading the same files with the same readers (pydicom + numpy) into a list, no shards; the two outputs are
  checked equal (sha256 of all slices, in order);
- peak memory of `python -m training.data CORPUS --out DIR --workers 2` at two corpus sizes (a quarter and the
  whole): the process tree's summed RSS and the ingesting process's own, sampled every 50 ms;
- training img/s from a folder's memory-mapped shards against the same images in memory (same model, batch and
  index stream), steps alternating.

Sizes: MEDGAN_BENCH_INGEST_FILES (default 10000, --quick 200) files of 256², the smaller corpus a quarter;
MEDGAN_BENCH_INGEST_ROUNDS (default 3) timing rounds.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import interleaved, ratio, summary
from .models import ROOT

SIDE = 256          # the corpus' slices and the ingested size
TRAIN_SIZE = 64     # the training comparison's images (a DCGAN step at 256² takes seconds on a CPU)
SERIES = 40         # slices per synthetic subject


def _sizes(quick: bool) -> tuple[int, int]:
    files = int(os.environ.get("MEDGAN_BENCH_INGEST_FILES") or (200 if quick else 10_000))
    return max(8, files // 4), files


def run_ingest(quick: bool) -> dict[str, Any]:
    try:
        import psutil  # noqa: F401  (requirements-test.txt)

        from scripts.dicom_corpus import make_corpus
    except ImportError as exc:
        return {"error": f"needs psutil and pydicom: {exc}"}
    small, large = _sizes(quick)
    rounds = int(os.environ.get("MEDGAN_BENCH_INGEST_ROUNDS") or (1 if quick else 3))
    out: dict[str, Any] = {"side": SIDE, "files_small": small, "files_large": large, "workers": 2,
                           "includes": __doc__.split("\n\n")[1].strip()}
    with tempfile.TemporaryDirectory(prefix="medgan-bench-ingest-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        corpora = {n: make_corpus(root / f"corpus-{n}", n, SIDE, SERIES) for n in (small, large)}
        out["corpus_seconds"] = round(time.perf_counter() - began, 1)
        out["speed"] = _speed(corpora[large], root, rounds)
        out["memory"] = [_peak_memory(corpora[n], root / f"rss-{n}") for n in (small, large)]
        out["rss_growth"] = round(out["memory"][1]["tree_peak_mb"] / out["memory"][0]["tree_peak_mb"], 3)
        out["training"] = _training(corpora[small], root, rounds, quick)
    return out


def _plain_loop(files: list, opts) -> list[np.ndarray]:
    """The baseline: each file read and sliced in this process, the slices kept in a list."""
    from training.data import readers as R
    from training.data import slicing as S

    slices = []
    for path, _, _ in files:
        item = R.read_file(path)
        kept, _ = S.file_slices(item, opts.size, opts.axes, opts.window, opts.square, opts.percentiles,
                                opts.min_foreground, opts.foreground_level)
        slices += [k[0] for k in kept]
    return slices


def _speed(corpus: Path, root: Path, rounds: int) -> dict[str, Any]:
    import shutil

    import pyarrow.parquet  # noqa: F401  (imported once, as by any run: not part of the files/s)

    from training.data import slicing as S
    from training.data.ingest import SliceOptions, SplitOptions
    from training.data.lazy import pixels_sha256
    from training.data.shards import open_shards
    from training.data.stream import ingest_to_folder

    files, _ = S.collect_files([corpus])
    opts, split = SliceOptions(SIDE, (2,)), SplitOptions()
    target, kept = root / "speed", {}

    def folder() -> None:
        shutil.rmtree(target, ignore_errors=True)
        ingest_to_folder([corpus], target, opts, split, workers=2, progress=False)

    def plain() -> None:
        kept["slices"] = None  # the previous round's list freed first
        kept["slices"] = _plain_loop(files, opts)

    times = interleaved({"workers 2": folder, "plain loop": plain}, rounds, 0.0, warmup=0)
    digest = hashlib.sha256()
    for img in kept.pop("slices"):
        digest.update(np.ascontiguousarray(img).tobytes())
    if pixels_sha256(open_shards(target).images) != digest.hexdigest():
        raise AssertionError("the dataset folder's slices differ from the plain loop's")
    return {"files": len(files), "same_slices": True,
            "rows": [{"contender": name, **summary(values, len(files))} for name, values in times.items()],
            "speedup": round(ratio(times, "plain loop", "workers 2"), 3)}


def _peak_memory(corpus: Path, out: Path) -> dict[str, Any]:
    """Peak RSS of `python -m training.data CORPUS --out OUT --workers 2`: the tree's sum and the parent's."""
    import psutil

    cmd = [sys.executable, "-m", "training.data", str(corpus), "--size", str(SIDE), "--out", str(out),
           "--workers", "2", "--quiet"]
    proc = psutil.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"tree": 0, "parent": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            try:
                parent = proc.memory_info().rss
                children = sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                continue
            peaks["parent"], peaks["tree"] = max(peaks["parent"], parent), max(peaks["tree"], parent + children)

    thread = threading.Thread(target=sample, daemon=True)
    began = time.perf_counter()
    thread.start()
    _, err = proc.communicate(timeout=3600)
    seconds = time.perf_counter() - began
    done.set()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"ingestion failed: {err.decode()[-500:]}")
    files = sum(1 for _ in corpus.rglob("*.dcm"))
    return {"files": files, "seconds": round(seconds, 2), "files_per_s": round(files / seconds, 1),
            "tree_peak_mb": round(peaks["tree"] / 2**20, 1), "parent_peak_mb": round(peaks["parent"] / 2**20, 1)}


def _training(corpus: Path, root: Path, rounds: int, quick: bool) -> dict[str, Any]:
    """Trainer.train_step from a folder's shards vs from the same images in memory (dcgan, batch 64)."""
    import torch

    from training.data.ingest import SliceOptions, SplitOptions
    from training.data.shards import open_shards
    from training.data.stream import ingest_to_folder
    from training.gan.config import make_config
    from training.gan.trainer import Trainer

    folder = ingest_to_folder([corpus], root / "train64", SliceOptions(TRAIN_SIZE, (2,)), SplitOptions(),
                              workers=2, progress=False)
    lazy = open_shards(folder).train().images
    batch = 16 if quick else 64
    cfg = make_config({"recipe": "dcgan", "size": TRAIN_SIZE, "batch_size": batch, "base_width": 64,
                       "d_width": 64, "out": str(root / "run"), "steps": 10, "threads": 1})
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainers = {"in memory": Trainer(cfg, np.asarray(lazy)), "shards": Trainer(cfg, lazy)}
        times = interleaved({name: t.train_step for name, t in trainers.items()}, rounds * (3 if quick else 10),
                            0.0)
    finally:
        torch.set_num_threads(previous)
    return {"size": TRAIN_SIZE, "batch": batch, "images": len(lazy), "threads": 1,
            "rows": [{"contender": name, **summary(values, batch)} for name, values in times.items()],
            "shards_vs_memory": round(ratio(times, "in memory", "shards"), 3)}
