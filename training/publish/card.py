"""The model card (README.md) of a model folder, as a Hugging Face model card. One template, all models.

`render_card(folder)` reads config.json (and eval.json when the evaluation has run) and returns the card;
`write_card(folder)` writes it (and a sample grid, samples.png, when the folder has none). The YAML front matter
is built with huggingface_hub's ModelCardData so `ModelCard.load(folder / "README.md")` gives the metadata back
(license, library_name, pipeline_tag, tags, model-index with the measured metrics).

    python -m training.card weights/brain-t1-dcgan-64 [more folders]     # (re)write the cards
    python -m training.card --check weights/*                             # exit 1 if a card is stale
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from medgan.config import ModelConfig, modality_name, slug
from medgan.files import atomic_write

from .privacy import REAL_IMAGES_NOTE, images_public

TASK = "unconditional-image-generation"
INDEX_METRICS = {"fid": "FID", "kid": "KID", "precision": "Precision", "recall": "Recall"}
BASE_TAGS = ["medical-imaging", "gan", "synthetic-data", "medgan"]
ARCH_TAGS = {"dcgan": ["dcgan"], "style": ["stylegan2", "style-based", "conditional"]}
SAMPLES_FILE, SAMPLES_COUNT, SAMPLES_SEED = "samples.png", 64, 0


def _number(value: Any) -> float | None:
    """A metric's headline number: the value itself, or its `mean`/`value` entry."""
    if isinstance(value, dict):
        value = value.get("mean", value.get("value"))
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "mean" in value:
        std = value.get("std")
        return _fmt(value["mean"]) + (f" ± {_fmt(std)}" if isinstance(std, (int, float)) and abs(std) > 1e-12 else "")
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


def _modality(config: ModelConfig) -> str:
    return modality_name(config.modality)


def load_eval(folder: Path, config: ModelConfig) -> dict[str, Any]:
    """eval.json (training.evaluate's full report) when present and readable, else config.json's metrics."""
    path = folder / "eval.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    return dict(config.metrics)


def _eval_dataset(config: ModelConfig, evaluation: dict[str, Any]) -> str:
    real = evaluation.get("real_data") if isinstance(evaluation.get("real_data"), dict) else {}
    return str(_first(real, "dataset") or _first(evaluation, "dataset")
               or _first(config.training_data, "name", "dataset", "title") or "training data")


def _reference_split(evaluation: dict[str, Any]) -> str:
    """Which real images the headline metrics compare against (training.evaluate: the train split)."""
    ref = str(evaluation.get("reference") or (evaluation.get("samples") or {}).get("real", "") or "train")
    return "train" if "train" in ref else "held-out"


def card_data(config: ModelConfig, evaluation: dict[str, Any]) -> ModelCardData:
    """Front matter: licence, library, task, tags (modality, organ) and a model-index of the measured metrics.

    No `datasets:` key: it may only name Hugging Face Hub datasets, and ours are local scans (named in the text).
    """
    tags = list(BASE_TAGS) + ARCH_TAGS.get(config.generator.arch, [])[:2 + bool(config.generator.classes)]
    tags += [slug(t) for t in (_modality(config), config.organ, config.plane) if t and slug(t) not in tags]
    data_name = _eval_dataset(config, evaluation)
    results = []
    for key, name in INDEX_METRICS.items():
        value = _number(evaluation.get(key))
        if value is not None:
            results.append(EvalResult(task_type=TASK, task_name="Unconditional image generation",
                                      dataset_type=slug(data_name) or "training-data", dataset_name=data_name,
                                      dataset_split=_reference_split(evaluation), metric_type=key,
                                      metric_value=round(value, 6), metric_name=name))
    return ModelCardData(license=config.license or "mit", library_name="medgan", pipeline_tag=TASK, tags=tags,
                         model_name=config.id if results else None, eval_results=results or None)


def _summary(config: ModelConfig) -> str:
    g = config.generator
    what = " ".join(t for t in (config.plane, _modality(config), config.organ) if t) or "medical"
    kind = "grayscale" if g.channels == 1 else f"{g.channels}-channel"
    if g.arch == "style":
        model = ("a class-conditional style-based generator (a compact StyleGAN2: mapping network, modulated "
                 "convolutions, per-layer styles)" if g.classes else "a style-based generator (a compact StyleGAN2)")
        classes = (f" Conditioned on the slice's {g.condition or 'class'}: {', '.join(f'`{c}`' for c in g.classes)} "
                   "(`generate(label=…)`; by default a class is drawn per image)." if g.classes else "")
        controls = (" Supports truncation (ψ, towards the stored mean w of each class), interpolation in w and "
                    "style mixing.")
    else:
        model, classes, controls = "a DCGAN", "", ""
    return (f"`{config.id}` is {model} that generates synthetic {g.resolution}×{g.resolution} {kind} {what} "
            f"image slices from random noise.{classes}{controls} Every image it produces is synthetic: it depicts "
            f"no real patient and carries no clinical information.")


def _training_data(config: ModelConfig) -> str:
    meta = config.training_data
    name = _first(meta, "name", "dataset", "title") or "not recorded"
    licences = _first(meta, "licences", "licenses", "licence", "license")
    licences = [licences] if isinstance(licences, str) else list(licences or [])
    lines = [f"Trained on **{_fmt(name)}** (local scans, not a Hugging Face Hub dataset)."
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
                                                        "split_rule", "train_slices", "train_subjects",
                                                        "heldout_slices")}
    if other:
        lines += ["", "<details><summary>Other recorded dataset facts</summary>", "",
                  _table(sorted(other.items()), ("key", "value")), "", "</details>"]
    return "\n".join(lines)


def _subjects(config: ModelConfig) -> str:
    """"2 subjects (A, B)" from the recorded sources; "few subjects" when not recorded."""
    meta = config.training_data
    sources = meta.get("sources") if isinstance(meta.get("sources"), list) else []
    names = sorted({str(s["subject"]) for s in sources if isinstance(s, dict) and s.get("subject")})
    count = meta.get("subjects") if isinstance(meta.get("subjects"), int) else len(names)
    if not count:
        return "few subjects"
    shown = f" ({', '.join(names)})" if names and len(names) == count and count <= 5 else ""
    trained = meta.get("train_subjects")
    if isinstance(trained, int) and 0 < trained < count:  # the rest were held out for evaluation
        shown += f", {trained} of them in the training split"
    return f"{'only one subject' if count == 1 else f'{count} subjects'}{shown}"


def _training_procedure(config: ModelConfig) -> str:
    t = config.training
    if not t:
        return "Not recorded (this folder was not written by `python -m training.train`)."
    cfg = t.get("config", {})
    hw = t.get("hardware", {})
    commands = [t.get("command") or "(command not recorded)", *(t.get("resumed_with") or [])]
    phase = " (phase 2)" if t.get("init_from") else ""
    out = [f"Recipe **{t.get('recipe', '?')}**, trained with MedGAN Studio's `python -m training.train`. "
           "Lineage, phase by phase:", "", _lineage(t), "",
           ("The commands" if len(commands) > 1 else "The command") + phase
           + (" (the run, then its `--resume` continuations)" if len(commands) > 1 else "") + ":", "",
           "```bash", *commands, "```"]
    wall = t.get("wall_time_s")
    rows = [(f"images seen{phase}", t.get("images_seen")),
            (f"wall time{phase}", f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else None),
            ("hardware", ", ".join(f"{k} {v}" for k, v in hw.items() if v is not None) if hw else None),
            ("final losses", t.get("final_losses"))]
    keys = ("arch", "condition", "loss", "batch_size", "lr_g", "lr_d", "beta1", "beta2", "augment", "augment_policy",
            "ada_target", "hflip", "spectral_norm", "d_batchnorm", "r1", "r1_every", "ema", "latent_dim", "w_dim",
            "mapping_layers", "style_mixing", "base_width", "d_width", "seed")
    rows += [(k, cfg[k]) for k in keys if k in cfg]
    out += ["", _table([r for r in rows if r[1] is not None], ("setting", "value"))]
    if t.get("ema"):
        out += ["", "The exported weights are the exponential moving average (EMA) of the generator."]
    return "\n".join(out)


def _lineage(t: dict[str, Any]) -> str:
    """A table of the model's training phases: what each started from, its steps and CPU-minutes, and the total.
    A warm-started model (--init-from) has two: the source model's whole lineage, then this run."""
    def minutes(seconds: Any) -> str:
        return f"{float(seconds) / 60:.1f}" if isinstance(seconds, (int, float)) else "–"

    def count(steps: Any) -> str:
        return f"{steps:,}" if isinstance(steps, int) else "–"

    init = t.get("init_from") if isinstance(t.get("init_from"), dict) else {}
    if not init:
        return _table([("1", "random initialisation", count(t.get("steps")), minutes(t.get("cpu_time_s")))],
                      ("phase", "started from", "steps", "CPU-minutes"))
    config = t.get("config") if isinstance(t.get("config"), dict) else {}
    new = len(init.get("new") or [])
    if init.get("classes"):  # another class set: a transfer (brain levels -> MR contrasts, brain -> chest)
        how = f", a model with other classes ({', '.join(init['classes'])}), whose {new} class tensors started new"
    elif new and init.get("resolution") != config.get("size", init.get("resolution")):
        how = f", grown from {init.get('resolution')}² (new layers: {new} tensors)"
    else:
        how = ""
    restored = str(init.get("discriminator", "")).startswith("restored")
    d_text = "continued from the source's exported discriminator" if restored else "started fresh"
    steps = [init.get("steps"), t.get("steps")]
    total = sum(s for s in steps if isinstance(s, int)) if all(isinstance(s, int) for s in steps) else None
    return _table([("1", f"`{init.get('model')}` at {init.get('resolution')}² (its whole lineage)", count(steps[0]),
                    minutes(init.get("cpu_time_s"))),
                   ("2", f"warm start from phase 1's generator{how}; the discriminator {d_text}", count(steps[1]),
                    minutes(t.get("cpu_time_s"))),
                   ("total", "", count(total), minutes(t.get("cpu_time_total_s")))],
                  ("phase", "started from", "steps", "CPU-minutes"))


# --- evaluation: eval.json (full report) or config.json metrics (its summary), normalised -------------------

def _floor(evaluation: dict[str, Any]) -> dict[str, Any]:
    floor = evaluation.get("floor")
    return floor if isinstance(floor, dict) else {}


def _memorization(evaluation: dict[str, Any]) -> dict[str, Any]:
    memo = evaluation.get("memorization")
    if isinstance(memo, dict):
        return memo
    prefix = "memorization_"
    flat = {k[len(prefix):]: v for k, v in evaluation.items() if k.startswith(prefix)}
    if "fraction_closer_than_heldout_p5" in flat:
        flat["fraction_closer"] = flat.pop("fraction_closer_than_heldout_p5")
    return flat


def _heldout(held: Any) -> list[str]:
    """Against the held-out subjects, beside the real floor across the split (eval.json floor.vs_heldout)."""
    if not isinstance(held, dict) or not isinstance(held.get("model"), dict):
        return []
    model, floor = held["model"], held.get("floor_train_vs_heldout") or {}
    rows = [("FID ↓", model.get("fid"), floor.get("fid")), ("KID ↓", model.get("kid"), floor.get("kid"))]
    return ["", f"Against the **held-out subjects** ({_fmt(', '.join(held.get('subjects', [])))}; n = {held['n']} "
            "images per side), beside the floor between the real training and held-out slices:", "",
            _table(rows, ("metric", "model vs held-out", "real train vs held-out"))]


def _evaluation(evaluation: dict[str, Any], folder: Path, public: bool = True) -> str:
    """The Evaluation section; `public`: the real slices eval.png shows may be published (training.privacy)."""
    if _number(evaluation.get("fid")) is None:
        return ("Not evaluated yet. Run `python -m training.evaluate <folder> --dataset <name>`; it writes "
                "eval.json and re-renders this card.")
    floor = _floor(evaluation)
    kid = evaluation.get("kid")
    if not isinstance(kid, dict) and isinstance(evaluation.get("kid_std"), (int, float)):
        kid = {"mean": kid, "std": evaluation["kid_std"]}
    samples = evaluation.get("samples") if isinstance(evaluation.get("samples"), dict) else {}
    n_syn = samples.get("n_synthetic", evaluation.get("n_synthetic"))
    n_real = samples.get("n_real", evaluation.get("n_real"))
    rows = [("FID ↓", evaluation.get("fid"), floor.get("fid")), ("KID ↓", kid, floor.get("kid")),
            ("Precision ↑", evaluation.get("precision"), floor.get("precision")),
            ("Recall ↑", evaluation.get("recall"), floor.get("recall")),
            ("MS-SSIM (diversity, lower = more diverse)", evaluation.get("ms_ssim_synthetic"),
             evaluation.get("ms_ssim_real")), *_inception_score_row(evaluation)]
    how = ("the real training slices with the held-out real slices (the dataset's own split: the training "
           "split has a single subject, so this is a fallback)" if floor.get("fallback") else
           "two disjoint halves of the real training slices, split by subject")
    out = [f"Synthetic images ({_fmt(n_syn)}) against the real training slices ({_fmt(n_real)}) of "
           f"**{_eval_dataset_name(evaluation)}**, in Inception-v3 feature space. The **real-vs-real floor** "
           f"compares {how}: roughly what a perfect generator could score with this little data. For MS-SSIM "
           "the right column is the real slices' own diversity.", "",
           _table([r for r in rows if r[1] is not None], ("metric", "model", "real-vs-real floor"))]
    out += _inception_score_note(evaluation)
    same_n = floor.get("model_same_n", floor.get("model_fid_same_n"))
    same_n = same_n.get("fid") if isinstance(same_n, dict) else same_n  # eval.json: a block; config: the FID
    if _number(same_n) is not None and floor.get("n"):
        out += ["", f"At the floor's sample size (n = {floor['n']} per side) the model's FID is "
                f"{_fmt(_number(same_n))}, to compare with the floor's {_fmt(_number(floor.get('fid')))}."]
    if floor.get("note"):
        out += ["", f"**Note:** {_fmt(floor['note'])}."]
    out += _heldout(floor.get("vs_heldout"))
    memo = _memorization(evaluation)
    if _number(memo.get("median_synthetic")) is not None:
        out += ["", "**Memorisation check.** Distance (pixel RMS, [0, 1] intensities) from each image to its "
                "nearest training slice:", "",
                _table([r for r in [("median, synthetic images", memo.get("median_synthetic")),
                        ("median, held-out real slices", memo.get("median_heldout")),
                        ("median, a training slice to its nearest other training slice",
                         memo.get("median_train_to_other_train")),
                        ("share of synthetic images closer than the held-out 5th percentile (≈ 0.05 if no "
                         "copying)", memo.get("fraction_closer")),
                        ("share of exact copies", memo.get("fraction_exact_copies"))] if r[1] is not None],
                       ("", "value"))]
        if memo.get("caveat"):
            out += ["", f"Caveat: {_fmt(memo['caveat'])}."]
    command = (evaluation.get("setup") or {}).get("command") or evaluation.get("eval_command")
    if command:
        out += ["", "Reproduce:", "", "```bash", str(command), "```"]
    # evaluate writes the card just before eval.png, and declares the figure in eval.json
    figure = str((evaluation.get("nearest_pairs") or {}).get("figure", "")) if isinstance(
        evaluation.get("nearest_pairs"), dict) else ""
    if (folder / "eval.png").is_file() or (public and figure.startswith("eval.png")):
        out += ["", "![Nearest training slices of the closest synthetic images; real vs synthetic grids]"
                "(eval.png)"]
        if not public:
            out += ["", f"**{REAL_IMAGES_NOTE}** ({_eval_dataset_name(evaluation)}, not a public dataset): the "
                    "top rows pair the synthetic images closest to a training slice with that real slice, and "
                    "the bottom-left grid is 64 random real training slices. Published with the data owner's "
                    "consent (`python -m training.push --allow-real-images`)."]
    details = [(k, evaluation.get(k)) for k in ("real_data", "feature_extractor", "versions")
               if isinstance(evaluation.get(k), dict)]
    if details:
        out += ["", "<details><summary>Evaluation set-up</summary>", ""]
        for key, value in details:
            out += [f"**{key.replace('_', ' ').capitalize()}**", "", _table(list(value.items()), ("", "value")), ""]
        out += ["Full record: `eval.json` in this repository.", "", "</details>"]
    return "\n".join(out)


def _inception_score_row(evaluation: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The table row of the Inception Score (right column: the real training slices' own IS); none when the
    evaluation record has no inception_score block."""
    block = evaluation.get("inception_score")
    if not isinstance(block, dict):
        return []
    if not block.get("available"):
        return [("Inception Score ↑ (right: real slices)", "not computed", None)]
    return [("Inception Score ↑ (right: real slices)", block, block.get("real"))]


def _inception_score_note(evaluation: dict[str, Any]) -> list[str]:
    """One line under the table: why IS is missing, if it is, and what it does (not) measure here."""
    block = evaluation.get("inception_score")
    if not isinstance(block, dict):
        return []
    why = f"{_fmt(block['reason'])}. " if not block.get("available") and block.get("reason") else ""
    splits = f"mean ± std over {_fmt(block.get('splits'))} splits; " if block.get("available") else ""
    caveat = block.get("caveat") or ("IS measures confident, diverse ImageNet-class predictions, which says "
                                     "little about grey-scale medical slices")
    return ["", f"Inception Score: {why}{splits}{_fmt(caveat)}."]


def _images_public(config: ModelConfig, evaluation: dict[str, Any]) -> bool:
    """Whether eval.png's real slices come from a public dataset (evaluated on, else trained on)."""
    real = evaluation.get("real_data") if isinstance(evaluation.get("real_data"), dict) else {}
    name = real.get("dataset") or evaluation.get("dataset") or config.training_data.get("name") or ""
    return images_public(config.training_data, str(name))


def _eval_dataset_name(evaluation: dict[str, Any]) -> str:
    real = evaluation.get("real_data") if isinstance(evaluation.get("real_data"), dict) else {}
    return str(real.get("dataset") or evaluation.get("dataset") or "the training data")


def _how_to_use(model_id: str) -> str:
    return f"""With the `medgan` package of MedGAN Studio (this folder in `weights/`, or in `extra_folders`):

```python
import medgan

gen = medgan.load_model("{model_id}")
images = gen.generate(count=16, seed=42)                     # list of PIL images (synthetic)
arrays = gen.generate(count=16, seed=42, output_type="np")   # uint8 array [16, H, W]
```

From the Hugging Face Hub (this repository; pin the revision you tested):

```python
from huggingface_hub import snapshot_download
import medgan

folder = snapshot_download("ORG/NAME", allow_patterns=["*.json", "*.safetensors", "README.md"])
gen = medgan.Generator.from_folder(folder)   # "ORG/NAME": this repository's id
```

MedGAN Studio can also list it by id with weights pulled from the Hub and verified by sha256: add an entry to
`weights/hub.json` (`python -m training.push FOLDER --repo ORG/NAME --catalogue weights/hub.json` writes it).

From a running MedGAN Studio app (locally or as a Space) with `gradio_client`:

```python
from gradio_client import Client

client = Client("http://127.0.0.1:7860/")   # or the Space id, e.g. "ORG/SPACE"
gallery = client.predict("{model_id}", 42, 16, api_name="/generate")   # model, seed, count
# -> [{{"image": path, "caption": "SYNTHETIC · {model_id} · seed 42 · #0"}}, …]: 16 synthetic PNG images
```

The same model and seed always give the same images; image *i* depends only on (seed, *i*)."""


def _samples_seed(path: Path) -> str:
    """The seed recorded in the grid's PNG text (training.gan.export and write_samples both write it)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return str(img.text.get("seed", "")) if hasattr(img, "text") else ""
    except OSError:
        return ""


def _images(folder: Path) -> list[str]:
    out = ["## Samples"]
    if (folder / SAMPLES_FILE).is_file():
        seed = _samples_seed(folder / SAMPLES_FILE)
        out.append("A grid of synthetic samples from this model" + (f" (seed {seed})" if seed else "")
                   + f", generated with `medgan` — every image is synthetic:\n\n![synthetic samples]({SAMPLES_FILE})")
    else:
        out.append("No sample grid in this folder (`write_card` creates one).")
    if (folder / "loss.png").is_file():
        out += ["## Loss curve", "![loss curve](loss.png)"]
    if (folder / "fid.png").is_file():
        out += ["## Quality vs CPU time", "FID logged during training (every few minutes, a fixed set of "
                "256 EMA samples against all training slices: biased upward at that size, so read the trend, and "
                "the full 2,000-image evaluation above for the number):\n\n![FID vs training CPU minutes](fid.png)"]
    return out


def _ablation(config: ModelConfig) -> list[str]:
    """A recipe comparison recorded in config.json under "ablation" (markdown), when the model has one."""
    text = config.extra.get("ablation")
    return ["### Ablation", str(text)] if text else []


# --- Downstream usefulness (python -m training.downstream writes downstream.json; the text comes from there) ---
def _downstream(folder: Path) -> list[str]:
    """The "Downstream usefulness" section from downstream.json; nothing when it is absent or unreadable."""
    path = folder / "downstream.json"
    try:
        report = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        report = None
    if not isinstance(report, dict):
        return []
    from ..evaluation.downstream.card_section import card_section
    text = card_section(report)
    return ["## Downstream usefulness", text] if text else []
# --- end Downstream usefulness ---------------------------------------------------------------------------------


def _privacy(folder: Path, config: ModelConfig) -> list[str]:
    """The "Privacy audit" section from privacy.json (python -m training.audit), what a DP-trained model guarantees,
    and a push's --accept-privacy-risk."""
    from ..evaluation.audit_report import AuditError, card_section, read
    from .privacy_record import card_lines

    out = card_lines(config)
    try:
        report = read(folder)
    except AuditError as exc:
        out.append(f"**privacy.json cannot be read**: {exc}. Re-run `python -m training.audit <folder>`.")
        report = None
    if report is not None:
        out.append(card_section(report))
    elif not out:
        out.append("Not audited yet: `python -m training.audit <folder>` measures whether the model gives its "
                   "training slices away (a membership-inference attack) and writes privacy.json.")
    return ["## Privacy audit", "\n\n".join(out)]


def render_card(folder: str | Path) -> str:
    """The card text of a model folder (pure: reads config.json, eval.json and which images exist)."""
    folder = Path(folder)
    config = ModelConfig.load(folder)
    evaluation = load_eval(folder, config)
    data = card_data(config, evaluation)
    sections = [
        f"# {config.title or config.id}",
        _summary(config) + (f" {config.description}" if config.description else ""),
        "## Intended use",
        f"{config.intended_use}\n\nSynthetic slices for teaching, for prototyping and testing image "
        "pipelines, for data-augmentation experiments and for benchmarking generative models.",
        "## Out-of-scope use",
        "- **Not for diagnosis**, treatment planning, triage or any other clinical decision.\n"
        "- Presenting generated images as real patient data, or as evidence about real patients.\n"
        "- Training clinical models on these images alone without validation on real data.",
        "## Training data",
        _training_data(config),
        "## Training procedure",
        _training_procedure(config),
        "## Evaluation",
        _evaluation(evaluation, folder, _images_public(config, evaluation)),
        *_ablation(config),
        *_downstream(folder),
        *_privacy(folder, config),
        "## Limitations and biases",
        f"- Trained on {_subjects(config)}: the images reflect their anatomy, scanner and protocol, not a "
        "population; pathology, age, sex and ethnic variation are under-represented or absent.\n"
        "- With small training sets GANs can memorise: some samples may closely resemble training slices "
        "(see the memorisation check under Evaluation). Do not treat outputs as de-identified by "
        "construction.\n"
        "- 2-D slices only, at low resolution; no 3-D consistency, no calibrated intensities"
        + (f"; the {config.generator.condition or 'class'} labels are coarse bands computed from slice positions, "
           "not expert annotations.\n" if config.generator.classes else ", no labels.\n") +
        "- GAN failure modes (mode collapse, artefacts) may occur; inspect samples before use.",
        "## How to use",
        _how_to_use(config.id),
        *_images(folder),
        "## Files",
        "`model.safetensors` (weights, safetensors only: no pickle), `config.json` (architecture and metadata, "
        "`medgan.ModelConfig`)" + (", `eval.json` (full evaluation record)" if (folder / "eval.json").is_file()
                                   else "")
        + (", `privacy.json` (membership-inference audit)" if (folder / "privacy.json").is_file() else "")
        + ". This card is generated by `training/publish/card.py`.",
    ]
    body = "\n\n".join(sections) + "\n"
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def write_samples(folder: Path) -> Path | None:
    """samples.png through medgan itself (what users will get), marked synthetic; grayscale models only."""
    from medgan.generator import Generator

    from medgan.imaging import grid

    from ..gan.runlog import save_synthetic_png

    gen = Generator.from_folder(folder, device="cpu")
    images = gen.generate(SAMPLES_COUNT, seed=SAMPLES_SEED, output_type="np")
    if images.ndim != 3:
        return None
    return save_synthetic_png(folder / SAMPLES_FILE, grid(images),
                              {"model_id": gen.config.id, "seed": str(SAMPLES_SEED)})


def write_card(folder: str | Path) -> Path:
    """Write README.md (and samples.png if missing); the card is parsed back before it replaces the old one."""
    folder = Path(folder)
    if not (folder / SAMPLES_FILE).is_file():
        write_samples(folder)
    path = folder / "README.md"
    text = render_card(folder)
    check_card_text(text)  # fails here rather than on the Hub
    return atomic_write(path, text)


REQUIRED_TAGS = ("medical-imaging", "gan", "synthetic-data")


def check_card_text(text: str) -> ModelCard:
    """Parse a card and check the metadata the Hub and MedGAN Studio rely on; ValueError says what is missing."""
    card = ModelCard(text)
    data = card.data.to_dict()
    problems = [f"{key} is missing" for key in ("license", "library_name", "pipeline_tag") if not data.get(key)]
    if data.get("pipeline_tag") not in (None, TASK):
        problems.append(f"pipeline_tag is {data['pipeline_tag']!r}, expected {TASK!r}")
    missing = [t for t in REQUIRED_TAGS if t not in (data.get("tags") or [])]
    if missing:
        problems.append(f"tags lack {', '.join(missing)}")
    if problems:
        raise ValueError("model card metadata: " + "; ".join(problems))
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.card", description="(Re)write model cards.")
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a card differs from the template")
    args = p.parse_args(argv)
    stale = 0
    for folder in args.folders:
        if args.check:
            current = (folder / "README.md").read_text() if (folder / "README.md").is_file() else ""
            ok = current == render_card(folder)
            stale += not ok
            fix = f"STALE (run python -m training.card {folder})"
            print(f"{folder}: {'up to date' if ok else fix}")
        else:
            print(f"wrote {write_card(folder)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["render_card", "write_card", "card_data", "check_card_text", "write_samples"]
