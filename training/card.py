"""The model card (README.md) of a model folder, as a Hugging Face model card.

`render_card(folder)` reads config.json (and eval.json when the evaluation has run) and returns the card;
`write_card(folder)` writes it. The YAML front matter is built with huggingface_hub's ModelCardData so
`ModelCard.load(folder / "README.md")` gives the metadata back (license, tags, model-index).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from medgan.config import ModelConfig

TASK = "unconditional-image-generation"
INDEX_METRICS = {"fid": "FID", "kid": "KID", "precision": "Precision", "recall": "Recall"}
FLOOR_KEYS = ("floor", "real_vs_real", "floor_real_vs_real")
MODALITY_NAMES = {"MR": "MRI", "CT": "CT", "CR": "X-ray", "DX": "X-ray", "MG": "mammography", "US": "ultrasound",
                  "PT": "PET", "OT": ""}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _number(value: Any) -> float | None:
    """A metric's headline number: the value itself, or its `mean`/`value` entry."""
    if isinstance(value, dict):
        value = value.get("mean", value.get("value"))
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "mean" in value:
        std = value.get("std")
        return _fmt(value["mean"]) + (f" ± {_fmt(std)}" if isinstance(std, (int, float)) else "")
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) not in (None, "", [], {}):
            return data[key]
    return None


def load_eval(folder: Path, config: ModelConfig) -> dict[str, Any]:
    path = folder / "eval.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, json.JSONDecodeError):
            pass
    return dict(config.metrics)


def card_data(config: ModelConfig, evaluation: dict[str, Any]) -> ModelCardData:
    data_name = str(_first(config.training_data, "name", "dataset", "title") or "training data")
    tags = ["medical-imaging", "gan", "dcgan", "synthetic-data", "medgan"]
    modality = MODALITY_NAMES.get(config.modality.upper(), config.modality) if config.modality else ""
    tags += [_slug(t) for t in (modality, config.organ) if t and _slug(t) not in tags]
    results = []
    for key, name in INDEX_METRICS.items():
        value = _number(evaluation.get(key))
        if value is not None:
            results.append(EvalResult(task_type=TASK, dataset_type=_slug(data_name) or "training-data",
                                      dataset_name=data_name, metric_type=key, metric_value=value,
                                      metric_name=name, dataset_split="held-out"))
    return ModelCardData(license=config.license or "mit", library_name="medgan", pipeline_tag=TASK, tags=tags,
                         model_name=config.id, eval_results=results or None)


def _summary(config: ModelConfig) -> str:
    g = config.generator
    modality = MODALITY_NAMES.get(config.modality.upper(), config.modality) if config.modality else ""
    what = " ".join(t for t in (config.plane, modality, config.organ) if t) or "medical"
    kind = "grayscale" if g.channels == 1 else f"{g.channels}-channel"
    return (f"`{config.id}` is a DCGAN that generates synthetic {g.resolution}×{g.resolution} {kind} {what} "
            f"image slices from random noise. Every image it produces is synthetic: it depicts no real "
            f"patient and carries no clinical information.")


def _training_data(config: ModelConfig) -> str:
    meta = config.training_data
    name = _first(meta, "name", "dataset", "title") or "not recorded"
    licences = _first(meta, "licences", "licenses", "licence", "license")
    licences = [licences] if isinstance(licences, str) else list(licences or [])
    lines = [f"Trained on **{_fmt(name)}** (a local dataset, not a Hugging Face Hub dataset)."
             + (f" {meta['description']}" if meta.get("description") else "")]
    lines += ["", "Licence(s) of the training data:"] + [f"- {_fmt(x)}" for x in licences or ["not recorded"]]
    if meta.get("licence_url"):
        lines.append(f"- Details: {meta['licence_url']}")
    sources = _first(meta, "sources", "source", "url", "urls")
    if isinstance(sources, list) and sources and all(isinstance(s, dict) for s in sources):
        keys = [k for k in ("id", "subject", "slices", "licence") if any(k in s for s in sources)]
        lines += ["", "Sources:", "", _table([tuple(s.get(k, "") for k in keys) for s in sources], tuple(keys))]
    elif sources:
        lines += ["", f"Source(s): {_fmt(sources)}"]
    slices, subjects = meta.get("train_slices"), meta.get("train_subjects")
    if slices:
        lines += ["", f"Training split: {slices} slices" + (f" from {subjects} subject(s)" if subjects else "")
                  + (f"; {meta['heldout_slices']} held-out slices were not used for training." if
                     meta.get("heldout_slices") else ".")]
    if meta.get("split_rule"):
        lines.append(f"Split rule: {meta['split_rule']}.")
    lines += [f"\n**Warning:** {w}" for w in meta.get("warnings", []) or []]
    other = {k: v for k, v in meta.items() if k not in ("name", "dataset", "description", "licences", "licenses",
                                                        "licence", "license", "licence_url", "sources", "warnings",
                                                        "split_rule")}
    if other:
        lines += ["", "<details><summary>Other recorded dataset facts</summary>", "",
                  _table(sorted(other.items()), ("key", "value")), "", "</details>"]
    return "\n".join(lines)


def _training_procedure(config: ModelConfig) -> str:
    t = config.training
    if not t:
        return "Not recorded."
    cfg = t.get("config", {})
    hw = t.get("hardware", {})
    out = [f"Recipe **{t.get('recipe', '?')}**, trained with `training/train.py` of MedGAN Studio:", "",
           "```bash", t.get("command", "?"), "```"]
    for extra in t.get("resumed_with", []) or []:
        out[-1:-1] = [extra]
    wall = t.get("wall_time_s")
    rows = [("steps", t.get("steps")), ("images seen", t.get("images_seen")),
            ("wall time", f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else None),
            ("hardware", ", ".join(f"{k} {v}" for k, v in hw.items() if v is not None) if hw else None),
            ("final losses", t.get("final_losses"))]
    keys = ("loss", "batch_size", "lr_g", "lr_d", "beta1", "beta2", "augment", "augment_policy", "ada_target",
            "hflip", "spectral_norm", "d_batchnorm", "r1", "r1_every", "ema", "latent_dim", "base_width",
            "d_width", "seed")
    rows += [(k, cfg[k]) for k in keys if k in cfg]
    out += ["", _table([r for r in rows if r[1] is not None], ("setting", "value"))]
    if t.get("ema"):
        out += ["", "The exported weights are the exponential moving average (EMA) of the generator."]
    return "\n".join(out)


def _evaluation(evaluation: dict[str, Any]) -> str:
    if not evaluation:
        return "Not yet evaluated."
    floor = next((evaluation[k] for k in FLOOR_KEYS if isinstance(evaluation.get(k), dict)), None)
    scalars = [(k, v) for k, v in evaluation.items() if not isinstance(v, dict) or _number(v) is not None]
    nested = [(k, v) for k, v in evaluation.items() if isinstance(v, dict) and _number(v) is None
              and k not in FLOOR_KEYS]
    out = []
    if scalars:
        if floor:
            out += ["Model (synthetic vs held-out real) next to the real-vs-real floor (real training vs "
                    "held-out real images: the best a perfect generator could score on this data).", "",
                    _table([(INDEX_METRICS.get(k, k), v, floor.get(k, "")) for k, v in scalars],
                           ("metric", "model", "real-vs-real floor"))]
        else:
            out += [_table([(INDEX_METRICS.get(k, k), v) for k, v in scalars], ("metric", "value"))]
    if floor:
        extra = [(k, v) for k, v in floor.items() if k not in dict(scalars)]
        if extra:
            out += ["", "**Real-vs-real floor (other values)**", "", _table(extra, ("metric", "value"))]
    for key, value in nested:
        out += ["", f"**{key.replace('_', ' ').capitalize()}**", "", _table(list(value.items()), ("metric", "value"))]
    return "\n".join(out)


def render_card(folder: str | Path) -> str:
    folder = Path(folder)
    config = ModelConfig.load(folder)
    evaluation = load_eval(folder, config)
    data = card_data(config, evaluation)
    title = config.title or config.id
    sections = [
        f"# {title}",
        _summary(config) + (f" {config.description}" if config.description else ""),
        "## Intended use",
        f"{config.intended_use}\n\nSynthetic slices for teaching, for prototyping and testing image "
        "pipelines, for data-augmentation experiments and for benchmarking generative models.",
        "## Out-of-scope use",
        "- Diagnosis, treatment planning, triage or any other clinical decision.\n"
        "- Presenting generated images as real patient data, or as evidence about real patients.\n"
        "- Training clinical models on these images alone without validation on real data.",
        "## Training data",
        _training_data(config),
        "## Training procedure",
        _training_procedure(config),
        "## Evaluation",
        _evaluation(evaluation),
        "## Limitations and biases",
        "- Trained on few subjects: the images reflect their anatomy, scanner and protocol, not a population; "
        "pathology, age, sex and ethnic variation are under-represented or absent.\n"
        "- With small training sets GANs can memorise: some samples may closely resemble training slices "
        "(see the memorisation check under Evaluation when present). Do not treat outputs as de-identified "
        "by construction.\n"
        "- 2-D slices only, at low resolution; no 3-D consistency, no calibrated intensities, no labels.\n"
        "- GAN failure modes (mode collapse, artefacts) may occur; inspect samples before use.",
        "## How to use",
        _how_to_use(config.id),
        "## Samples",
        "Synthetic samples (seed 0) from this model:\n\n![samples](samples.png)",
        "## Loss curve",
        "![loss curve](loss.png)",
    ]
    body = "\n\n".join(sections) + "\n"
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _how_to_use(model_id: str) -> str:
    return f"""With the `medgan` package of MedGAN Studio (this folder in `weights/` or in `extra_folders`):

```python
import medgan

gen = medgan.load_model("{model_id}")
images = gen.generate(count=16, seed=42)                      # list of PIL images (synthetic)
arrays = gen.generate(count=16, seed=42, output_type="np")   # uint8 array [16, H, W]
```

From a running MedGAN Studio app (locally or as a Space) with `gradio_client`:

```python
from gradio_client import Client

client = Client("http://127.0.0.1:7860/")   # or the Space id
gallery = client.predict("{model_id}", 42, 16, api_name="/generate")   # model, seed, count
# a list of {{"image": path, "caption": ...}}: 16 synthetic PNG images
```

The same model and seed always give the same images."""


def write_card(folder: str | Path) -> Path:
    folder = Path(folder)
    path = folder / "README.md"
    text = render_card(folder)
    ModelCard(text)  # parses the front matter: fails here rather than on the Hub
    tmp = path.with_name("README.md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


__all__ = ["render_card", "write_card", "card_data"]
