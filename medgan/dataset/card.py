"""The dataset card of a parquet dataset (its README.md): YAML front matter the Hub and `datasets` read, and a
body that says what the data is, how it was made and how good the model behind it measured.

Everything comes from the export's settings (`job`, a medgan.dataset.shards.Job), the model's config.json and,
when the model folder is at hand, its eval.json and downstream.json. No timestamps: the same export writes the
same card. The training data's sources are listed only for a dataset marked public (`training_data.public`);
for any other, the card names its licences and size but no source, subject or file.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..config import ModelConfig, modality_name, slug
from ..export import SOFTWARE, atomic_write
from .parquet import DATA_FILES, SPLIT, data_sizes, features

DATA_CARD = "README.md"
# The Hub's size buckets (size_categories), upper bounds exclusive.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (10**9, "100M<n<1B"),
                   (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T"))
NOT_FOR_DIAGNOSIS = ("**Not for diagnosis.** Every image here is synthetic: it depicts no real patient and carries "
                     "no clinical information. Do not use it for diagnosis, treatment, triage or any clinical "
                     "decision, and never mix it into a clinical archive.")


def size_category(count: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if count < bound), "n>1T")


def dataset_command(model_id: str, count: int, out: str, *, seed: int = 0, truncation: float = 1.0,
                    image_class: str | None = None, label: bool = False, shard_size: int | None = None,
                    fmt: str = "parquet") -> str:
    """The `python -m medgan.dataset …` command that writes this dataset (the card's and the app's)."""
    args = ["python", "-m", "medgan.dataset", model_id, "--count", str(count), "--out", out, "--format", fmt,
            "--seed", str(seed)]
    if truncation != 1.0:
        args += ["--truncation", f"{truncation:g}"]
    if image_class:
        args += ["--class", image_class]
    if label:
        args.append("--label")
    if shard_size is not None:
        args += ["--shard-size", str(shard_size)]
    return shlex.join(args)


def card_metadata(job: Any, config: ModelConfig) -> dict[str, Any]:
    """The YAML front matter: licence, tasks, tags, size, configs (data_files) and dataset_info (features)."""
    modality = modality_name(config.modality)
    tags = ["synthetic", "medical-imaging"]
    tags += [slug(t) for t in (modality, config.organ, config.plane) if t and slug(t) not in tags]
    tasks = (["image-classification"] if job.classes else []) + ["unconditional-image-generation"]
    feats = [{"name": name, "dtype": _yaml_dtype(spec)} for name, spec in features(job.classes).items()]
    num_bytes, download_size = data_sizes(job.out)
    return {"license": config.license or "other", "pretty_name": f"Synthetic {config.title or config.id}",
            "task_categories": tasks, "tags": tags + ["medgan"], "size_categories": [size_category(job.count)],
            "configs": [{"config_name": "default", "data_files": [{"split": SPLIT, "path": DATA_FILES}]}],
            "dataset_info": {"features": feats, "splits": [{"name": SPLIT, "num_bytes": num_bytes,
                                                            "num_examples": job.count}],
                             "download_size": download_size, "dataset_size": num_bytes}}


def _yaml_dtype(spec: dict[str, Any]) -> Any:
    """A feature's `dtype` in the card's dataset_info (the form `Features._to_yaml_list` writes)."""
    if spec["_type"] == "Image":
        return "image"
    if spec["_type"] == "ClassLabel":
        return {"class_label": {"names": {str(i): name for i, name in enumerate(spec["names"])}}}
    return spec["dtype"]


def _read_json(folder: Path | None, name: str) -> dict[str, Any]:
    try:
        data = json.loads((folder / name).read_text()) if folder is not None else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, dict):
        value = value.get("mean")
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _what(job: Any, config: ModelConfig, model_ref: str) -> list[str]:
    g = config.generator
    steer = [f"truncation ψ = {job.truncation:g}" if job.truncation != 1.0 else "no truncation (ψ = 1)"]
    if job.classes:
        steer.append(f"class `{job.image_class}` for every image" if job.image_class else
                     f"a {g.condition or 'class'} drawn per image (`label`)")
    classes = (f" The `label` column is the model's {g.condition or 'class'}: "
               f"{', '.join(f'`{c}`' for c in job.classes)}." if job.classes else "")
    return [f"{job.count} synthetic {g.resolution}×{g.resolution} "
            f"{'grayscale' if g.channels == 1 else f'{g.channels}-channel'} images of {config.title or config.id}, "
            f"generated by the model `{job.model_id}` (card: {model_ref}) with {SOFTWARE}: seed {job.seed}, "
            f"{', '.join(steer)}.{classes}", "", NOT_FOR_DIAGNOSIS, "",
            f"Every row is synthetic (`synthetic` is true). Row `index` i is image i of seed `seed`: "
            f"`Generator.generate(count=1, seed=seed, start=i, truncation=truncation, label=…)` of model "
            f"`{job.model_id}` at revision `{job.revision or 'n/a'}` (`model_revision`) gives it again, pixel for "
            "pixel. Each PNG's text chunks also say `Synthetic: true`, with the model, seed and index."
            + (" A visible SYNTHETIC label is burnt into every image." if job.label else ""), "",
            "Written by:", "", "```bash",
            dataset_command(job.model_id, job.count, Path(job.out).name, seed=job.seed, truncation=job.truncation,
                            image_class=job.image_class, label=job.label, shard_size=job.shard_size),
            "```"]


def _quality(folder: Path | None, model_ref: str) -> list[str]:
    """FID with its real-vs-real floor, the copying proxy and TSTR/TRTR, from eval.json and downstream.json."""
    ev, down = _read_json(folder, "eval.json"), _read_json(folder, "downstream.json")
    out = [f"Measured on the model, not on these particular images; details on its card: {model_ref}.", ""]
    if not isinstance(ev.get("fid"), (int, float)):
        out.append("The model has no evaluation (eval.json) yet.")
    else:
        floor = ev.get("floor") if isinstance(ev.get("floor"), dict) else {}
        same_n = floor.get("model_same_n") if isinstance(floor.get("model_same_n"), dict) else {}
        memo = ev.get("memorization") if isinstance(ev.get("memorization"), dict) else {}
        rows = [("FID ↓ (all samples vs the real training slices)", _num(ev["fid"]), "–"),
                (f"FID ↓ at the floor's size (n = {floor.get('n', '?')} per side)", _num(same_n.get("fid")),
                 _num(floor.get("fid"))),
                ("share of images closer to a training slice than the held-out 5th percentile (≈ 0.05 if no "
                 "copying)", _num(memo.get("fraction_closer")), _num(memo.get("expected_fraction_if_no_copying"))),
                ("share of exact copies of a training slice", _num(memo.get("fraction_exact_copies")), "–")]
        out += ["| metric | model | real-vs-real floor / expected |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out += [""] + _downstream(down)
    return out


def _downstream(report: dict[str, Any]) -> list[str]:
    try:
        results, task = report["results"], report["task"]
        rows = [f"| {clf} | {_ci(res['trtr'])} | {_ci(res['tstr'])} |" for clf, res in results.items()]
    except (KeyError, TypeError):
        return ["No downstream study (downstream.json) of the model yet."]
    note = " (a QUICK smoke run: not a measurement)" if report.get("settings", {}).get("quick") else ""
    return [f"Downstream{note}: a classifier of the slice's {task.get('name')} ({len(task.get('classes', []))} "
            "classes), tested on real slices of held-out subjects; balanced accuracy, mean [95 % CI] over "
            f"{len(report.get('settings', {}).get('seeds', []))} seeds:", "",
            "| classifier | trained on real (TRTR) | trained on synthetic (TSTR) |", "|---|---|---|", *rows]


def _ci(regime: dict[str, Any]) -> str:
    stat = regime["summary"]["balanced_accuracy"]
    return f"{stat['mean']:.3f} [{stat['ci95'][0]:.3f}, {stat['ci95'][1]:.3f}]"


def _training_data(config: ModelConfig) -> list[str]:
    """Sources and licences as the model card gives them; sources only when the data is marked public."""
    data = config.training_data
    licences = data.get("licences") or data.get("licence") or []
    licences = [licences] if isinstance(licences, str) else list(licences)
    out = [f"The model was trained on **{data.get('name') or 'data not recorded'}**"
           + (f": {data['description']}" if data.get("public") is True and data.get("description") else ".")]
    out += ["", "Licence(s) of the training data:"] + [f"- {x}" for x in licences or ["not recorded"]]
    if data.get("licence_url"):
        out.append(f"- Details: {data['licence_url']}")
    sources = [s for s in data.get("sources") or [] if isinstance(s, dict)]
    if sources and data.get("public") is True:
        out += ["", "| source | subject | slices | licence |", "|---|---|---|---|"]
        out += [f"| {s.get('id', '')} | {s.get('subject', '')} | {s.get('slices', '')} | "
                f"{str(s.get('licence', '')).replace('|', '/')} |" for s in sources]
    elif sources:
        out += ["", f"{len(sources)} source volume(s), not listed: the training data is not marked public."]
    return out


def _uses(job: Any, config: ModelConfig) -> list[str]:
    return ["- Intended: " + (config.intended_use or "research, education, data augmentation and benchmarking."),
            "- Prototyping and testing image pipelines, teaching, benchmarking generative models, augmentation "
            "experiments validated on real data.",
            "- Not intended: diagnosis or any clinical decision; presenting the images as real patient data; "
            "training clinical models on them without validation on real data.",
            f"- Limits: {config.generator.resolution}² slices from a small model trained on few subjects; the "
            "images inherit its biases and errors, and the metrics above are the model's, measured once.",
            "- Pixel spacing and intensities are not calibrated."]


def _how_to_load(job: Any) -> list[str]:
    names = ", ".join(f"'{c}'" for c in job.classes)
    lines = ["```python", "from datasets import load_dataset", "",
             'ds = load_dataset("parquet", data_dir="DIR/data", split="train")   # a local copy of this folder',
             '# or load_dataset("DIR", split="train"), or load_dataset("ORG/NAME", split="train") on the Hub',
             "image = ds[0][\"image\"]                                          # a PIL image"]
    if job.classes:
        lines.append(f"names = ds.features[\"label\"].names                               # [{names}]")
    lines += ["```", "", "Without `datasets` (pyarrow and torch only), MedGAN Studio's torch Dataset:", "",
              "```python", "from medgan.dataset import ParquetDataset", "",
              "item = ParquetDataset(\"DIR\")[0]   # {'image': float tensor [C, H, W] in [-1, 1], 'index': …"
              + (", 'label': …}" if job.classes else "}"), "```"]
    return lines


def render_card(job: Any, config: ModelConfig, folder: Path | None, model_ref: str) -> str:
    """The card's text. `folder`: the model folder (for eval.json and downstream.json) or None; `model_ref`:
    how to reach the model card (a link, or the model folder in MedGAN Studio)."""
    head = yaml.safe_dump(card_metadata(job, config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    body = [f"# Synthetic {config.title or config.id}", "", *_what(job, config, model_ref),
            "", "## Quality of the model", "", *_quality(folder, model_ref),
            "", "## Training data of the model", "", *_training_data(config),
            "", "## Intended uses and limits", "", *_uses(job, config),
            "", "## How to load", "", *_how_to_load(job)]
    return f"---\n{head}---\n\n" + "\n".join(body) + "\n"


def write_card(job: Any, config: ModelConfig, folder: Path | None, model_ref: str) -> Path:
    return atomic_write(Path(job.out) / DATA_CARD, render_card(job, config, folder, model_ref))


__all__ = ["DATA_CARD", "NOT_FOR_DIAGNOSIS", "card_metadata", "dataset_command", "render_card", "size_category",
           "write_card"]
