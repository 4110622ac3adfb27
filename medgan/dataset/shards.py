"""The sharded, resumable, parallel export behind `python -m medgan.dataset` (see the package docstring).

A shard is generated, rendered by medgan.export's writers, written into a temp folder and renamed
(medgan.files.atomic_path); `shard.json` inside it marks it complete. dataset.json, README.txt and
manifest.csv describe the whole folder.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InvalidArgumentError, MedganError
from ..export import SOFTWARE, ExportError, Provenance, atomic_write, readme, render, write_error
from ..files import TEMP_MARK, atomic_path, file_digest
from ..validation import check_count, check_flag, check_label, check_seed, check_truncation
from .card import write_card
from .parquet import DATA_DIR, parquet_name, parquet_shard_complete, write_parquet_shard

FORMATS = ("png", "npz", "dicom", "nifti", "parquet")
PARQUET = "parquet"  # a Hugging Face dataset repo (medgan.dataset.parquet) instead of shard folders
MARKER = "shard.json"
MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ["index", "seed", "file", "item", "shard"]
DATASET_JSON = "dataset.json"
# dataset.json keys that must agree for a re-run to resume (rather than mix two datasets in one folder).
IDENTITY_KEYS = ("model", "revision", "seed", "count", "format", "shard_size", "label", "truncation", "class")


# --- the model --------------------------------------------------------------------------------------
def weights_revision(folder: Path) -> str:
    """A local model's revision: `sha256:` + its weights' sha256 (folders have no commit)."""
    return "sha256:" + file_digest(folder / "model.safetensors")


def _local_folder(model_id: str, extra_folders: list[str] | None) -> Path | None:
    from ..registry import Registry, default_sources, get_registry
    registry = Registry(default_sources(extra_folders)) if extra_folders else get_registry()
    for source in registry.sources:
        if hasattr(source, "folder"):
            try:
                return source.folder(model_id)
            except MedganError:
                continue
    return None


def load_generator(model: str, extra_folders: list[str] | None = None, device: str | None = None) -> Any:
    """A generator from a model folder path (holding config.json) or a model id (through medgan.load_model)."""
    from ..generator import Generator
    path = Path(model)
    if (path / "config.json").is_file():
        return Generator.from_folder(path, device=device)
    import medgan
    return medgan.load_model(model, extra_folders=extra_folders)


def model_folder(gen: Any, model: str, extra_folders: list[str] | None = None) -> Path | None:
    """The folder holding the model's files (config.json, eval.json, …) when it is a local one, else None."""
    if (Path(model) / "config.json").is_file():
        return Path(model)
    config = getattr(gen, "config", None)
    return _local_folder(getattr(config, "id", None) or model, extra_folders)


def model_identity(gen: Any, model: str, extra_folders: list[str] | None = None) -> tuple[str, str, str]:
    """(model id, revision, modality). Local folders have no commit, so their revision is `sha256:` + the
    weights' sha256."""
    config = getattr(gen, "config", None)
    model_id = getattr(config, "id", None) or model
    revision = getattr(gen, "revision", "") or ""
    if not revision:
        folder = model_folder(gen, model, extra_folders)
        if folder is not None and (folder / "model.safetensors").is_file():
            revision = weights_revision(folder)
    return model_id, revision, getattr(config, "modality", "") or ""


def model_card_ref(model_id: str, folder: Path | None) -> str:
    """Where the model card is, for the dataset card: its Hub page for a Hub model, else its folder."""
    from ..registry import get_registry
    for source in get_registry().sources:
        try:
            entry = source.entry(model_id) if hasattr(source, "entry") else None
        except MedganError:
            continue
        if entry is not None:
            return f"[{entry.repo_id}](https://huggingface.co/{entry.repo_id}/blob/{entry.revision}/README.md)"
    return f"`weights/{folder.name if folder is not None else model_id}/README.md` in MedGAN Studio"


def supports_start(gen: Any) -> bool:
    import inspect
    try:
        return "start" in inspect.signature(gen.generate).parameters
    except (TypeError, ValueError):
        return False


# --- the plan ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """Everything a worker needs to write shards (picklable, for spawn)."""
    model: str
    out: str
    fmt: str
    count: int
    shard_size: int
    seed: int
    label: bool
    model_id: str
    revision: str
    modality: str
    batch_size: int = 256
    extra_folders: tuple[str, ...] = ()
    threads: int = 1
    truncation: float = 1.0
    image_class: str | None = None    # a fixed class of a conditional model; None: one drawn per image
    classes: tuple[str, ...] = ()     # the model's class names (conditional models)

    @property
    def num_shards(self) -> int:
        return -(-self.count // self.shard_size)

    def shard_range(self, k: int) -> range:
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.count))

    def provenance(self, classes: dict[int, str] | None = None) -> Provenance:
        from .. import __version__
        # No created_utc: files must not embed a time, so any shard regenerates byte for byte.
        return Provenance(model_id=self.model_id, seed=self.seed, revision=self.revision, modality=self.modality,
                          version=__version__, truncation=self.truncation, classes=classes or {})

    def uid_root(self) -> str:
        steering = f"|psi={self.truncation}|class={self.image_class}" if (self.truncation != 1.0 or
                                                                           self.image_class) else ""
        return f"medgan|{self.model_id}|{self.revision}|{self.seed}|label={self.label}{steering}"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def shards_for_rank(num_shards: int, rank: int, world_size: int) -> list[int]:
    return list(range(rank, num_shards, world_size))


def shard_complete(out: Path, k: int) -> bool:
    """The marker is present and every file it lists exists at its recorded size (shard-folder formats)."""
    folder = out / shard_name(k)
    try:
        marker = json.loads((folder / MARKER).read_text())
        return all((folder / f["file"]).stat().st_size == f["size"] for f in marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def job_shard_complete(job: Job, k: int) -> bool:
    """Shard k of this job is written completely (a marked folder, or a parquet file with all its rows)."""
    if job.fmt == PARQUET:
        return parquet_shard_complete(job, k)
    return shard_complete(Path(job.out), k)


def generate_shard(job: Job, gen: Any, k: int, progress: Callable[[int], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Images of shard k (uint8 [n, H, W(, C)]) and their class indices ([] for unconditional models)."""
    indices, arrays = job.shard_range(k), []
    for begin in range(indices.start, indices.stop, job.batch_size):
        n = min(job.batch_size, indices.stop - begin)
        arrays.append(gen.generate(count=n, seed=job.seed, start=begin, truncation=job.truncation,
                                   label=job.image_class, output_type="np"))
        if progress:
            progress(n)
    labels = gen.labels(len(indices), job.seed, start=indices.start, label=job.image_class) if job.classes else \
        np.empty(0, dtype=np.int64)
    return np.concatenate(arrays), labels


def write_shard(job: Job, gen: Any, k: int, progress: Callable[[int], None] | None = None) -> int:
    """Generate and write shard k (temp folder or file, then rename). Returns how many images it holds."""
    arrays, labels = generate_shard(job, gen, k, progress)
    indices = job.shard_range(k)
    if job.fmt == PARQUET:
        write_parquet_shard(job, arrays, labels, k)
        return len(indices)
    names = {indices.start + i: job.classes[int(c)] for i, c in enumerate(labels)}
    files = render(arrays, job.provenance(names), job.fmt, indices.start, label=job.label,
                   config=getattr(gen, "config", None), uid_root=job.uid_root())
    marker = {"shard": k, "indices": [indices.start, indices.stop], "format": job.fmt, "seed": job.seed,
              "files": [{"file": f.name, "size": len(f.data), "indices": list(f.indices)} for f in files]}
    out = Path(job.out)
    final = out / shard_name(k)
    try:
        with atomic_path(final) as tmp:  # a temp folder `.shard-KKKKK.tmp-<pid>-<hex>`, renamed when complete
            tmp.mkdir()
            for f in files:
                (tmp / f.name).write_bytes(f.data)
            (tmp / MARKER).write_text(json.dumps(marker, indent=1))
            if final.exists():  # an incomplete leftover (the caller checked it is not complete)
                shutil.rmtree(final)
    except OSError as exc:
        raise write_error(final, exc) from None
    return len(indices)


def clean_temp(out: Path, shards: list[int], fmt: str = "png", num_shards: int = 0) -> None:
    """Remove temp folders (or parquet temp files) an interrupted run left for these shards (never other
    ranks' shards)."""
    if fmt == PARQUET:
        out, mine = out / DATA_DIR, {parquet_name(k, num_shards) for k in shards}
    else:
        mine = {shard_name(k) for k in shards}
    for path in out.glob(f".*{TEMP_MARK}*"):
        if path.name[1:].split(TEMP_MARK)[0] in mine:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


# --- dataset.json, README, manifest ------------------------------------------------------------------
# dataset.json values of folders written before a key existed: they resume as these settings.
IDENTITY_DEFAULTS = {"truncation": 1.0, "class": None}
LAYOUTS = {"folders": "shard-KKKKK/ holds images K*shard_size … (K+1)*shard_size-1; manifest.csv lists all",
           PARQUET: "data/train-KKKKK-of-NNNNN.parquet holds images K*shard_size … (K+1)*shard_size-1, one row "
                    "each; README.md is the dataset card"}


def dataset_info(job: Job, gen: Any) -> dict[str, Any]:
    """dataset.json: the settings and what regenerates image i. No creation time: a re-run writes the same
    bytes."""
    from .. import __version__
    config = getattr(gen, "config", None)
    generator = getattr(config, "generator", None)
    return {"synthetic": True, "software": SOFTWARE, "version": __version__, "model": job.model_id,
            "revision": job.revision, "modality": job.modality, "resolution": getattr(config, "resolution", None),
            "channels": getattr(generator, "channels", None), "seed": job.seed, "count": job.count,
            "format": job.fmt, "shard_size": job.shard_size, "shards": job.num_shards, "label": job.label,
            "truncation": job.truncation, "class": job.image_class, "classes": list(job.classes),
            "condition": getattr(generator, "condition", "") or "",
            "index_rule": "image i = Generator.generate(count=1, seed=seed, start=i, truncation=truncation, "
                          "label=class)",
            "layout": LAYOUTS[PARQUET if job.fmt == PARQUET else "folders"]}


def init_folder(job: Job, gen: Any) -> dict[str, Any]:
    """Create DIR with dataset.json and README.txt, or check that DIR holds this same dataset."""
    out = Path(job.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the output folder: {exc.strerror or exc}") from None
    info = dataset_info(job, gen)
    path = out / DATASET_JSON
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"{DATASET_JSON} in the output folder is unreadable ({exc}); "
                                       "use an empty folder") from None
        diff = [f"{k}: {old.get(k, IDENTITY_DEFAULTS.get(k))!r} there, {info[k]!r} now" for k in IDENTITY_KEYS
                if old.get(k, IDENTITY_DEFAULTS.get(k)) != info[k]]
        if diff:
            raise InvalidArgumentError("the output folder holds a different dataset (" + "; ".join(diff) +
                                       "); use another --out or the same settings to resume")
        return old
    try:
        # overwrite=False: another rank may have written it meanwhile; the first one stays.
        with atomic_path(path, overwrite=False) as tmp:
            tmp.write_text(json.dumps(info, indent=2) + "\n")
        if job.fmt != PARQUET:  # a parquet dataset's README.md (its card) is written when it is complete
            (out / "README.txt").write_text(dataset_readme(job))
    except OSError as exc:
        raise write_error(path, exc) from None
    return info


def dataset_readme(job: Job) -> str:
    return (readme(job.provenance(), job.fmt) + f"\nDataset: {job.count} images in {job.num_shards} shard(s) of "
            f"{job.shard_size}; image i = model {job.model_id} (revision {job.revision or 'n/a'}), seed {job.seed}, "
            f"index i. manifest.csv maps each index to its file; dataset.json holds the settings.\n"
            "(This folder has manifest.csv instead of metadata.json.)\n")


def finish(job: Job, gen: Any) -> Path | None:
    """When every shard is complete: manifest.csv (shard folders) or the dataset card README.md (parquet);
    None while some shard is missing (another rank's)."""
    if job.fmt == PARQUET:
        if not all(job_shard_complete(job, k) for k in range(job.num_shards)):
            return None
        folder = model_folder(gen, job.model, list(job.extra_folders) or None)
        return write_card(job, gen.config, folder, model_card_ref(job.model_id, folder))
    return write_manifest(job)


def write_manifest(job: Job) -> Path | None:
    """manifest.csv from every shard marker, or None while some shard is missing (another rank's)."""
    out = Path(job.out)
    if not all(shard_complete(out, k) for k in range(job.num_shards)):
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_FIELDS)
    for k in range(job.num_shards):
        marker = json.loads((out / shard_name(k) / MARKER).read_text())
        for f in marker["files"]:
            for item, index in enumerate(f["indices"]):
                writer.writerow([index, job.seed, f"{shard_name(k)}/{f['file']}", item, k])
    return atomic_write(out / MANIFEST, buffer.getvalue().encode())


# --- running ------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(job: Job, queue: Any) -> None:
    torch.set_num_threads(job.threads)
    _WORKER["gen"] = load_generator(job.model, list(job.extra_folders) or None)
    _WORKER["job"], _WORKER["queue"] = job, queue


def _worker_shard(k: int) -> int:
    return write_shard(_WORKER["job"], _WORKER["gen"], k, _WORKER["queue"].put)


@dataclass
class ExportSummary:
    out: str
    count: int
    shards: int
    written_shards: int
    skipped_shards: int
    images_written: int
    seconds: float
    manifest: bool   # the dataset is complete: manifest.csv (shard folders) or README.md (parquet) written

    @property
    def images_per_minute(self) -> float:
        return 60 * self.images_written / self.seconds if self.seconds > 0 else 0.0


def rank_from_env() -> tuple[int, int]:
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InvalidArgumentError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise InvalidArgumentError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return rank, world


def check_dataset_format(fmt: object) -> str:
    if not isinstance(fmt, str) or fmt.strip().lower() not in FORMATS:
        raise InvalidArgumentError(f"unknown format {str(fmt)[:40]!r}; choose one of {', '.join(FORMATS)}")
    return fmt.strip().lower()


def plan(model: str, count: int, out: str | Path, fmt: str, gen: Any, *, shard_size: int = 1000, seed: int = 0,
         label: bool = False, truncation: object = 1.0, image_class: object = None, batch_size: int = 256,
         threads: int = 1, extra_folders: list[str] | None = None) -> Job:
    """The validated Job for `gen` (loaded from `model`): every argument checked, the class resolved to its name."""
    fmt = check_dataset_format(fmt)
    count, seed = check_count(count, limit=10**12), check_seed(seed)
    shard_size = check_count(shard_size, limit=10**9)
    batch_size, threads = check_count(batch_size, limit=4096), check_count(threads, limit=256)
    if not supports_start(gen):
        raise InvalidArgumentError(f"model {model!r} cannot generate by index (no `start`); it cannot be "
                                   "exported as a resumable dataset")
    classes = tuple(getattr(gen, "classes", ()) or ())
    fixed = check_label(image_class, list(classes), getattr(gen, "id", model))
    model_id, revision, modality = model_identity(gen, str(model), extra_folders)
    return Job(model=str(model), out=str(out), fmt=fmt, count=count, shard_size=shard_size, seed=seed,
               label=check_flag("label", label), model_id=model_id, revision=revision, modality=modality,
               batch_size=batch_size, extra_folders=tuple(extra_folders or ()), threads=threads,
               truncation=check_truncation(truncation), image_class=None if fixed is None else classes[fixed],
               classes=classes)


def export_dataset(model: str, count: int, out: str | Path, fmt: str = "png", *, shard_size: int = 1000,
                   seed: int = 0, workers: int = 1, threads: int = 1, label: bool = False,
                   truncation: float = 1.0, image_class: str | None = None,
                   batch_size: int = 256, rank: int | None = None, world_size: int | None = None,
                   extra_folders: list[str] | None = None, progress: bool = True,
                   generator: Any = None) -> ExportSummary:
    """Write (or resume) a sharded dataset; see the module docstring. rank/world_size default to the env.

    `workers` processes with `threads` torch threads each: independent shards scale better across processes
    than one forward pass across threads (on 2 busy cores, 1 thread was 4-8x faster than torch's default).
    truncation ψ and image_class (a class name or index of a conditional model) steer every image, as in
    Generator.generate. `generator`: `model` already loaded (the app's registry copy); workers load their own.
    """
    workers = check_count(workers, limit=256)
    if rank is None or world_size is None:
        rank, world_size = rank_from_env()
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        os.environ.setdefault("MEDGAN_DEVICE", f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}")
    gen = generator if generator is not None else load_generator(str(model), extra_folders)
    job = plan(model, count, out, fmt, gen, shard_size=shard_size, seed=seed, label=label, truncation=truncation,
               image_class=image_class, batch_size=batch_size, threads=threads, extra_folders=extra_folders)
    init_folder(job, gen)
    out = Path(out)
    mine = shards_for_rank(job.num_shards, rank, world_size)
    clean_temp(out, mine, job.fmt, job.num_shards)
    todo = [k for k in mine if not job_shard_complete(job, k)]
    done_images = sum(len(job.shard_range(k)) for k in mine if k not in todo)
    bar = _bar(sum(len(job.shard_range(k)) for k in mine), done_images, rank, world_size, progress)
    began, previous_threads = time.perf_counter(), torch.get_num_threads()
    try:
        if workers == 1 or len(todo) <= 1:
            torch.set_num_threads(job.threads)
            for k in todo:
                write_shard(job, gen, k, bar.update)
        else:
            _run_pool(job, todo, workers, bar)
    finally:
        torch.set_num_threads(previous_threads)
        bar.close()
    seconds = time.perf_counter() - began
    complete = finish(job, gen) is not None
    return ExportSummary(out=str(out), count=job.count, shards=job.num_shards, written_shards=len(todo),
                         skipped_shards=len(mine) - len(todo), images_written=sum(len(job.shard_range(k))
                                                                                  for k in todo),
                         seconds=seconds, manifest=complete)


def _bar(total: int, initial: int, rank: int, world: int, enabled: bool):
    from tqdm.auto import tqdm
    desc = "images" if world == 1 else f"rank {rank}/{world} images"
    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def _run_pool(job: Job, todo: list[int], workers: int, bar: Any) -> None:
    """Shards across `workers` spawned processes (spawn: safe with torch threads and CUDA)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop = threading.Event()

    def drain() -> None:  # progress from the workers, chunk by chunk
        while not stop.is_set():
            try:
                bar.update(queue.get(timeout=0.2))
            except Exception:  # queue.Empty, or the queue closed at shutdown
                continue

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        with ctx.Pool(min(workers, len(todo)), initializer=_worker_init, initargs=(job, queue)) as pool:
            for _ in pool.imap_unordered(_worker_shard, todo):
                pass
    finally:
        stop.set()
        thread.join()
        while True:  # whatever arrived after the thread stopped
            try:
                bar.update(queue.get_nowait())
            except Exception:
                break
