"""What the app (and any other front end) does, without any UI: validated generate / export / listing.

app.py stays a thin layer of widgets over these functions; everything here raises MedganError subclasses
with messages that are safe to show to a remote user.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import __version__, limits, zoo
from .config import ModelConfig
from .errors import InvalidArgumentError, MedganError, UnknownModelError
from .files import atomic_path, prune_tree
from .export import (WRITERS, ZIP_EPOCH, Provenance, atomic_write, check_format, file_stem, label_image, png_bytes,
                     write_error, write_zip)
from .imaging import mixing_figure
from .registry import Registry, get_registry
from .threads import fair_share
from .sources import ModelInfo
from .validation import check_count, check_flag, check_label, check_model_id, check_seed, check_truncation

MAX_COUNT = limits.max_count()  # MEDGAN_MAX_COUNT
EXPORT_RETENTION_S = limits.export_retention_s()  # MEDGAN_EXPORT_RETENTION_S
# The Download tab's extra format: a Hugging Face dataset (parquet + card, medgan.dataset) zipped, not a WRITERS one.
DATASET_FORMAT = "dataset"
DATASET_CLI_COUNT = 10_000  # the Download tab's first count for the command line
NOTICE = ("All images are **synthetic**, produced by generative models. They are for research and education, "
          "**not for diagnosis** or any clinical decision.")


def export_dir() -> Path:
    path = Path(os.environ.get("MEDGAN_EXPORT_DIR") or Path(tempfile.gettempdir()) / "medgan-exports")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _registry(registry: Registry | None) -> Registry:
    return registry or get_registry()


def models(registry: Registry | None = None) -> list[ModelInfo]:
    return _registry(registry).list_models()


def model_choices(registry: Registry | None = None) -> list[tuple[str, str]]:
    """(label, id) of every model that can be sampled from a seed."""
    return [(m.label(), m.id) for m in models(registry) if m.generatable]


def models_json(registry: Registry | None = None) -> list[dict[str, Any]]:
    keys = ("id", "title", "modality", "organ", "plane", "resolution", "source", "license", "metrics",
            "architecture", "dataset", "kind", "generatable", "revision", "notice", "classes")
    return [{k: m.to_dict()[k] for k in keys} for m in models(registry)]


def model_classes(model_id: object, registry: Registry | None = None) -> list[str]:
    """Class names of a conditional model ([] for others or unknown ids); from its listing, nothing loaded."""
    try:
        return list(_registry(registry).info(check_model_id(model_id)).classes)
    except (InvalidArgumentError, UnknownModelError):
        return []


def source_notices(registry: Registry | None = None) -> list[str]:
    """Why a source lists nothing or less than expected (e.g. no medigan catalogue offline), for the UI."""
    reg = _registry(registry)
    reg.list_models()  # sources refresh their `notice` while listing
    return [f"{s.name}: {s.notice}" for s in reg.sources if getattr(s, "notice", "")]



# --- the Models tab: a browsable zoo (filter, sort, thumbnails, details; logic in medgan.zoo) ----------
def model_facets(registry: Registry | None = None) -> dict[str, list[str]]:
    """The choices of each Models-tab filter (modality, organ, source, kind, resolution), "any" first."""
    return zoo.facets(models_json(registry))


def browse_models(filters: dict[str, object] | None = None, sort: str | None = None,
                  registry: Registry | None = None) -> list[dict[str, Any]]:
    """The `models_json` rows matching `filters` ({"modality": "MR", "source": "local", …}; "any" or empty
    matches all), optionally sorted by FID (`sort="fid"`: measured, else published; ascending, missing last)."""
    return zoo.select(models_json(registry), filters, sort)


def _local_folder(model_id: str, registry: Registry) -> Path | None:
    for source in registry.sources:
        if source.name == "local" and hasattr(source, "folder"):
            try:
                return source.folder(model_id)
            except MedganError:
                return None
    return None


def model_samples(model_ids: list[str], registry: Registry | None = None,
                  rows: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    """(path of samples.png, caption) for each local model among `model_ids` whose folder ships one."""
    reg = _registry(registry)
    out = []
    for row in models_json(reg) if rows is None else rows:
        if row["id"] in model_ids and row["source"] == "local":
            folder = _local_folder(row["id"], reg)
            if folder is not None and (folder / "samples.png").is_file():
                out.append((str(folder / "samples.png"), f"SYNTHETIC · {row['id']}"))
    return out


def model_details(model_id: object, registry: Registry | None = None,
                  rows: list[dict[str, Any]] | None = None) -> str:
    """The Models tab's detail panel for one model (Markdown; "" for an unknown id): its card's key facts,
    with the training data, subjects and data licences of a local model's config.json."""
    reg = _registry(registry)
    try:
        model_id = check_model_id(model_id)
    except InvalidArgumentError:
        return ""
    row = next((m for m in (models_json(reg) if rows is None else rows) if m["id"] == model_id), None)
    if row is None:
        return ""
    config = None
    folder = _local_folder(model_id, reg) if row["source"] == "local" else None
    if folder is not None:
        try:
            config = ModelConfig.load(folder).to_dict()
        except MedganError:
            config = None
    return zoo.detail_markdown(row, config)


def explore_models(filters: dict[str, object] | None = None, sort: str | None = None, picked: object = None,
                   registry: Registry | None = None) -> dict[str, Any]:
    """Everything the Models tab shows for one choice of filters and sort, from one listing: `rows` (matching,
    sorted), `total` (all models), `samples` (thumbnails of the listed local models), `picked` (the picked
    model while it is still listed, else the first one, or None) and its `details`."""
    reg = _registry(registry)
    everything = models_json(reg)
    rows = zoo.select(everything, filters, sort)
    ids = [r["id"] for r in rows]
    keep = picked if picked in ids else (ids[0] if ids else None)
    return {"rows": rows, "total": len(everything), "samples": model_samples(ids, reg, everything),
            "picked": keep, "details": model_details(keep, reg, everything) if keep else ""}


# --- the first look: the best-measured model, and one line on the selected one --------------------------
def model_quality(model_id: str, registry: Registry | None = None) -> zoo.Quality | None:
    """The headline quality in a local model's eval.json (zoo.quality); None without a readable one."""
    folder = _local_folder(model_id, _registry(registry))
    try:
        evaluation = json.loads((folder / "eval.json").read_text()) if folder is not None else None
    except (OSError, ValueError):
        return None
    return zoo.quality(evaluation) if isinstance(evaluation, dict) else None


def default_model(registry: Registry | None = None) -> str | None:
    """The model the app opens on: of those that can be sampled from a seed, the best by zoo.quality_rank
    (closest to held-out people relative to the real floor, by each local model's eval.json); the first listed
    when none is measured; None when there are none."""
    reg = _registry(registry)
    listed = [m for m in models(reg) if m.generatable]
    return zoo.best_model({m.id: model_quality(m.id, reg) if m.source == "local" else None for m in listed})


def model_summary(model_id: object, registry: Registry | None = None) -> str:
    """The Generate tab's one line: what the model is and its headline quality ("" for an unknown id)."""
    reg = _registry(registry)
    try:
        info = reg.info(check_model_id(model_id))
    except (InvalidArgumentError, UnknownModelError):
        return ""
    return zoo.summary_line(info.to_dict(), model_quality(info.id, reg) if info.source == "local" else None)


def caption(model_id: str, seed: int, index: int, prov: Provenance | None = None) -> str:
    facts = [f"ψ {v}" if k == "truncation" else str(v) for k, v in (prov.image_facts(index) if prov else {}).items()
             if k in ("class", "truncation")]
    return " · ".join([f"SYNTHETIC · {model_id} · seed {seed} · #{index}", *facts])


def controls(gen: Any, truncation: object, label: object) -> tuple[dict[str, Any], list[str]]:
    """generate() keyword arguments for ψ and class, and the model's classes. Generators that have neither
    control (medigan's) accept only the defaults, and say so otherwise."""
    truncation = check_truncation(truncation)
    classes = list(getattr(gen, "classes", []) or [])
    fixed = check_label(label, classes, getattr(gen, "id", "?"))  # None/"any": a class per image
    if not hasattr(gen, "labels"):
        if truncation != 1.0:
            raise InvalidArgumentError(f"truncation: model {getattr(gen, 'id', '?')!r} does not support it; "
                                       "leave it at 1")
        return {}, classes
    return {"truncation": truncation, "label": fixed}, classes


def batch(model_id: object, seed: object, count: object, truncation: object = 1.0, label: object = None,
          registry: Registry | None = None, *, limit: int | None = None, now: bool = False
          ) -> tuple[np.ndarray, Provenance, Any]:
    """Validated images uint8 [count, H, W] and their provenance (class and ψ of each image)."""
    model_id, seed = check_model_id(model_id), check_seed(seed)
    count = check_count(count, MAX_COUNT if limit is None else limit)
    reg = _registry(registry)
    gen = reg.load(model_id)
    kwargs, classes = controls(gen, truncation, label)
    with fair_share():  # as many threads as the machine can spare now (medgan.threads)
        arrays = gen.generate(count=count, seed=seed, output_type="np", **kwargs)
    names = gen.class_names(gen.labels(count, seed, label=kwargs.get("label"))) if classes else []
    fields = dict(model_id=model_id, seed=seed, revision=getattr(gen, "revision", ""),
                  truncation=kwargs.get("truncation", 1.0), classes=dict(enumerate(names)))
    prov = Provenance.now(modality=reg.info(model_id).modality, **fields) if now else \
        Provenance(version=__version__, **fields)
    return arrays, prov, gen


def gallery(arrays: np.ndarray, prov: Provenance, captions: list[str] | None = None
            ) -> list[tuple[Image.Image, str]]:
    """(image, caption) pairs; each PIL image carries synthetic-provenance text for its PNG encoding."""
    out = []
    for index, array in enumerate(arrays):
        image = Image.fromarray(array)
        # Deterministic text only (no timestamp), so the same request gives byte-identical PNGs.
        image.info.update({k: v for k, v in prov.for_index(index).items() if k != "CreationTime"})
        out.append((image, captions[index] if captions else caption(prov.model_id, prov.seed, index, prov)))
    return out


def generate(model_id: object, seed: object, count: object, truncation: object = 1.0, label: object = None,
             registry: Registry | None = None) -> list[tuple[Image.Image, str]]:
    """(image, caption) pairs; captions name the class (conditional models) and ψ (when not 1)."""
    arrays, prov, _ = batch(model_id, seed, count, truncation, label, registry)
    return gallery(arrays, prov)


def arrays_npz(model_id: object, seed: object, count: object, truncation: object = 1.0, label: object = None,
               registry: Registry | None = None) -> tuple[bytes, str]:
    """The batch as one .npz for programs (the app's queue-free route): `images` uint8 [count, H, W], `index`,
    `classes` (the class of each image, "" for unconditional models) and `provenance`, a JSON string with what
    a PNG's text chunks say of each image ("Synthetic": "true" …). Same validation and limits as generate();
    loads with numpy.load(…, allow_pickle=False). Returns (bytes, a synthetic_… file name)."""
    import io

    arrays, prov, _ = batch(model_id, seed, count, truncation, label, registry)
    n = len(arrays)
    facts = [{k: v for k, v in prov.for_index(i).items() if k != "CreationTime"} for i in range(n)]
    buffer = io.BytesIO()
    np.savez(buffer, images=arrays, index=np.arange(n, dtype=np.int64),
             classes=np.array([prov.classes.get(i, "") for i in range(n)], dtype=str),
             provenance=np.array(json.dumps({"synthetic": True, "model": prov.model_id, "seed": prov.seed,
                                             "notice": NOTICE.replace("**", ""), "images": facts})))
    return buffer.getvalue(), f"{file_stem(prov.model_id, prov.seed, 0).rsplit('_', 1)[0]}_n{n}.npz"


def download_formats() -> list[tuple[str, str]]:
    """The Download tab's choices, (label, value): every export writer, then the parquet dataset."""
    return [(fmt, fmt) for fmt in WRITERS] + [("dataset (parquet + card)", DATASET_FORMAT)]


def export(model_id: object, seed: object, count: object, fmt: object = "png", label: object = False,
           registry: Registry | None = None, truncation: object = 1.0, image_class: object = None) -> Path:
    """A zip of the batch in `fmt` with metadata.json and README.txt, in the export folder. (`label` is the
    burnt-in SYNTHETIC flag; `image_class` the class of a conditional model.) fmt "dataset": see dataset_zip."""
    if isinstance(fmt, str) and fmt.strip().lower() == DATASET_FORMAT:
        return dataset_zip(model_id, seed, count, label, registry, truncation, image_class)
    fmt, label = check_format(fmt), check_flag("label", label)
    arrays, prov, gen = batch(model_id, seed, count, truncation, image_class, registry, now=True)
    model_id, seed, count = prov.model_id, prov.seed, len(arrays)
    reg = _registry(registry)
    info = reg.info(model_id)
    cleanup_exports()
    name = f"{file_stem(model_id, seed, 0).rsplit('_', 1)[0]}_n{count}_{fmt}_{uuid.uuid4().hex[:8]}.zip"
    extra = {"model_info": {k: v for k, v in info.to_dict().items() if k not in ("card_summary", "description")},
             "labelled": label}
    return write_zip(export_dir() / name, arrays, prov, fmt, extra=extra, label=label, info=info,
                     config=getattr(gen, "config", None))  # config.json may state a pixel spacing


def dataset_command(model_id: object, seed: object, count: object, truncation: object = 1.0,
                    image_class: object = None, label: object = False, registry: Registry | None = None) -> str:
    """The `python -m medgan.dataset … --format parquet` command that writes this dataset, for counts above what
    the app generates (validated like a download: the model, seed, ψ and class must be valid)."""
    from .dataset import dataset_command as command

    model_id, seed = check_model_id(model_id), check_seed(seed)
    count, truncation = check_count(count, limit=10**12), check_truncation(truncation)
    info = _registry(registry).info(model_id)
    if not info.arch:  # medigan's models cannot generate image i alone (no `start`)
        raise InvalidArgumentError(f"model {model_id!r} cannot be exported as a dataset (MedGAN Studio models only)")
    fixed = check_label(image_class, list(info.classes), model_id)
    name = None if fixed is None else info.classes[fixed]
    return command(model_id, count, f"datasets/{model_id}-seed{seed}", seed=seed, truncation=truncation,
                   image_class=name, label=check_flag("label", label))


def dataset_zip(model_id: object, seed: object, count: object, label: object = False,
                registry: Registry | None = None, truncation: object = 1.0, image_class: object = None) -> Path:
    """The batch as a Hugging Face dataset, zipped: data/train-00000-of-00001.parquet, README.md (the dataset
    card) and dataset.json, as `python -m medgan.dataset … --format parquet` writes them (same bytes). Up to
    MEDGAN_MAX_COUNT images; above, the error gives the command line that writes it."""
    from .dataset import export_dataset

    model_id, seed = check_model_id(model_id), check_seed(seed)
    try:
        count = check_count(count, MAX_COUNT)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{exc}; a larger dataset is written on your machine by: "
                                   f"{dataset_command(model_id, seed, count, truncation, image_class, label, registry)}"
                                   ) from None
    reg = _registry(registry)
    dataset_command(model_id, seed, count, truncation, image_class, label, reg)  # the same checks, before work
    gen, folder = reg.load(model_id), _local_folder(model_id, reg)
    cleanup_exports()
    stem = f"{file_stem(model_id, seed, 0).rsplit('_', 1)[0]}_n{count}"
    work = export_dir() / f".{stem}_{uuid.uuid4().hex[:8]}"
    try:
        with fair_share():
            export_dataset(str(folder or model_id), count, work / stem, "parquet", shard_size=count, seed=seed,
                           label=label, truncation=truncation, image_class=image_class, generator=gen,
                           progress=False)
        return _zip_folder(work / stem, export_dir() / f"{stem}_{DATASET_FORMAT}_{uuid.uuid4().hex[:8]}.zip")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _zip_folder(folder: Path, path: Path) -> Path:
    """Every file under `folder` (paths relative to it), fixed timestamps: the same folder gives the same zip."""
    try:
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for file in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.writestr(zipfile.ZipInfo(file.relative_to(folder).as_posix(), ZIP_EPOCH), file.read_bytes())
    except OSError as exc:
        raise write_error(path, exc) from None
    return path


def cleanup_exports(retention_s: float | None = None, max_bytes: int | None = None) -> int:
    """Delete exports older than the retention time, then the oldest beyond MEDGAN_CACHE_MAX_MB; returns how
    many were removed."""
    return prune_tree(export_dir(), pattern="synthetic_*",
                      max_age_s=EXPORT_RETENTION_S if retention_s is None else retention_s,
                      max_bytes=limits.cache_max_bytes() if max_bytes is None else max_bytes)


def model_markdown(model_id: str, registry: Registry | None = None) -> str:
    """The info panel: config metadata and the card summary."""
    try:
        m = _registry(registry).info(model_id)
    except InvalidArgumentError:
        return ""
    rows = [("Model id", f"`{m.id}`"), ("Source", m.source), ("Modality", m.modality), ("Organ / region", m.organ),
            ("Plane", m.plane), ("Resolution", f"{m.resolution}×{m.resolution}" if m.resolution else ""),
            ("Architecture", m.architecture), ("Training data", m.dataset), ("Licence", m.license),
            ("Revision", m.revision[:12])]
    for key in ("fid", "kid", "precision", "recall"):
        if isinstance(m.metrics.get(key), (int, float)):
            rows.append((key.upper() if len(key) == 3 else key.title(), f"{m.metrics[key]:.3g}"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v)
    parts = [f"### {m.title}", m.card_summary or m.description, "| Field | Value |\n|---|---|\n" + table]
    if m.notice:
        parts.append(f"*{m.notice}*")
    return "\n\n".join(p for p in parts if p)


# --- exploring the latent space ------------------------------------------------------------------------
def _explorer(model_id: object, registry: Registry | None) -> Any:
    gen = _registry(registry).load(check_model_id(model_id))
    if not hasattr(gen, "interpolate"):
        raise InvalidArgumentError(f"model {gen.id if hasattr(gen, 'id') else model_id!r} cannot be explored: "
                                   "interpolation and mixing need a MedGAN Studio model")
    return gen


def interpolate(model_id: object, seed_a: object, seed_b: object, frames: object = 8, truncation: object = 1.0,
                label: object = None, registry: Registry | None = None
                ) -> tuple[list[tuple[Image.Image, str]], Path, Path]:
    """The frames as a gallery, an animated GIF and a zip (PNGs + metadata.json with each frame's t)."""
    gen = _explorer(model_id, registry)
    frames_np, meta = gen.interpolate(seed_a, seed_b, frames, truncation=truncation, label=label,
                                      output_type="np", return_meta=True)
    names = {0: meta["class_a"], len(frames_np) - 1: meta["class_b"]} if meta["class_a"] else {}
    prov = Provenance.now(model_id=gen.id, seed=meta["seed_a"], revision=gen.revision, truncation=meta["truncation"],
                          classes=names, extra={i: {"t": t} for i, t in enumerate(meta["t"])})
    captions = [f"SYNTHETIC · {gen.id} · {meta['seed_a']}→{meta['seed_b']} · t {t:.2f}" for t in meta["t"]]
    stem = f"{file_stem(gen.id, meta['seed_a'], 0).rsplit('_', 1)[0]}_to{meta['seed_b']}"
    gif = write_gif(export_dir() / f"{stem}_{len(frames_np)}f_{uuid.uuid4().hex[:8]}.gif", frames_np, prov)
    archive = _zip(stem, frames_np, prov, {"interpolation": meta})
    return gallery(frames_np, prov, captions), gif, archive


def mix(model_id: object, row_seeds: object, col_seeds: object, crossover: object = None, truncation: object = 1.0,
        label: object = None, registry: Registry | None = None
        ) -> tuple[Path, list[tuple[Image.Image, str]], Path]:
    """Style mixing: the StyleGAN-style figure as a PNG (header row = column sources, header column = row
    sources), the cells as a gallery, and a zip of the cells with metadata.json."""
    gen = _explorer(model_id, registry)
    cells, meta = gen.mix(row_seeds, col_seeds, crossover=crossover, truncation=truncation, label=label,
                          output_type="np", return_meta=True)
    rows, cols = meta["row_seeds"], meta["col_seeds"]
    sources = {s: gen.generate(1, s, truncation=meta["truncation"], label=label, output_type="np")[0]
               for s in rows + cols}
    flat = cells.reshape(-1, *cells.shape[2:])
    extra = {r * len(cols) + c: {"row_seed": rs, "col_seed": cs, "crossover": meta["crossover"]}
             for r, rs in enumerate(rows) for c, cs in enumerate(cols)}
    classes = {i: meta["row_classes"][i // len(cols)] for i in range(len(flat))} if meta["row_classes"] else {}
    prov = Provenance.now(model_id=gen.id, seed=rows[0], revision=gen.revision, truncation=meta["truncation"],
                          classes=classes, extra=extra)
    figure = label_image(mixing_figure(cells, np.stack([sources[s] for s in rows]), np.stack([sources[s] for s in cols])))
    stem = f"{file_stem(gen.id, rows[0], 0).rsplit('_', 1)[0]}_mix{len(rows)}x{len(cols)}"
    text = {**prov.for_index(0), "Description": f"SYNTHETIC style-mixing grid by MedGAN Studio ({gen.id}): rows "
            f"{rows} give coarse styles (layers < {meta['crossover']}), columns {cols} fine styles"}
    png = atomic_write(export_dir() / f"{stem}_{uuid.uuid4().hex[:8]}.png", png_bytes(figure, text))
    captions = [f"SYNTHETIC · {gen.id} · coarse {e['row_seed']} × fine {e['col_seed']}" for e in extra.values()]
    return png, gallery(flat, prov, captions), _zip(stem, flat, prov, {"style_mixing": meta})


def write_gif(path: Path, frames: np.ndarray, prov: Provenance, ms_per_frame: int = 100) -> Path:
    """An animated, looping GIF whose comment says it is synthetic."""
    import io
    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0,
                   comment=f"SYNTHETIC frames generated by MedGAN Studio ({prov.model_id}); not a patient image".encode())
    cleanup_exports()
    return atomic_write(path, buffer.getvalue())


def _zip(stem: str, arrays: np.ndarray, prov: Provenance, extra: dict[str, Any]) -> Path:
    cleanup_exports()
    return write_zip(export_dir() / f"{stem}_{uuid.uuid4().hex[:8]}.zip", arrays, prov, "png", extra=extra)
