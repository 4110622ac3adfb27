"""What `training.push` checks before a model folder leaves this machine: no patient identifiers, no original file
paths, no real images of a non-public dataset. Every file push would upload is read: every JSON file (field by
field), the card and any other text (line by line), PNG text chunks, the safetensors metadata of the weights
(`model.safetensors`: the configuration, training command included, field by field) and, for the dataset's
originals, every file's raw bytes.

- Identifiers: JSON fields named like DICOM patient fields (PatientID, PatientName, PatientBirthDate…), DICOM
  person names (`DOE^JANE`), medical record numbers (`MRN123456`), and — when the dataset's pseudonym keys file
  is found (training.data.pseudonyms; located through the run folder that config.json's training.config.out names,
  whose train_config.json holds the local data path, or given with --keys) — every original the keys file lists
  (subject ids, file paths and their distinctive parts, patient names and birth dates) and the local path the
  data was read from, in every text, field and chunk and (6 characters or more) in every file's bytes. Never
  allowed.
- Paths: absolute paths (`/home/…`, `C:\\…`, `~/…`; system data under /usr/ excepted) anywhere in those files;
  for a non-public dataset, any source id or subject in training_data with a directory separator or a date.
- Real images: a PNG that is neither marked synthetic (its `synthetic: true` text chunk) nor a plot (loss.png,
  fid.png, downstream.png) shows real slices — eval.png puts training slices beside their nearest synthetic
  images. Refused for a dataset not marked public unless `--allow-real-images`; the card then says so.

- Pixels: a model of a dataset not marked public needs its membership-inference audit (privacy.json, written by
  training.audit for these very weights) showing no attack advantage over both controls beyond
  evaluation.audit_report.LEAK_THRESHOLD, or differentially private training (config.json's training.dp, whose ε
  Opacus' accountant reproduces). `--accept-privacy-risk` publishes it anyway and records that on the card.

A dataset is public when config.json's training_data says `"public": true`, or it is one of training.data's
built-ins (public data, published under their own names). Training records a dataset under its public name or
`dataset-<hash>` (training.data.recorded_name), never the path it was read from; this check refuses what slips
through anyway, naming the file and the field.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from .. import ROOT
from ..data.pseudonyms import Keys, KeysError, is_pseudonym

PLOT_FILES = ("loss.png", "fid.png", "downstream.png")  # charts only: no image panels
PATIENT_FIELD = re.compile(r"patient|birth.?date|accession", re.I)
PERSON_NAME = re.compile(r"[A-Za-z][A-Za-z'-]*\^[A-Za-z]")  # DICOM PN: FAMILY^GIVEN
DATE = re.compile(r"(?<!\d)(?:19|20)\d\d[-_.]?(?:0[1-9]|1[0-2])[-_.]?(?:0[1-9]|[12]\d|3[01])(?!\d)")
RECORD_NUMBER = re.compile(r"(?<![A-Za-z])MRN[-_:#\s]?\d{4,}", re.I)  # a medical record number, as in file names
ABS_PATH = re.compile(r"(?<![\w.:/~\\-])(?:/(?!usr/)[\w.@+-]+/[^\s'\"`)\]|]+|[A-Za-z]:\\[^\s'\"`]+|~/[^\s'\"`]+)")
REAL_IMAGES_NOTE = "eval.png shows REAL slices of the training data"


def dataset_public(training_data: dict[str, Any]) -> bool:
    """Marked `"public": true`, or (no mark) a training.data built-in by name."""
    if isinstance(training_data.get("public"), bool):
        return training_data["public"]
    from ..data import BUILTIN_DATASETS
    return str(training_data.get("name", "")) in BUILTIN_DATASETS


def images_public(training_data: dict[str, Any], eval_dataset: str) -> bool:
    """Whether real slices of `eval_dataset` (what eval.png shows) may be published."""
    from ..data import BUILTIN_DATASETS
    if eval_dataset in BUILTIN_DATASETS:
        return True
    return bool(eval_dataset) and eval_dataset == training_data.get("name") and dataset_public(training_data)


def _mask(value: str) -> str:
    """Enough of an identifier to find it, not the whole of it."""
    value = str(value)
    return f"{value[:2]}…" if len(value) > 3 else "…"


def walk(obj: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(field path, key, string value) for every string in a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
            yield (f"{path}.{k}" if path else str(k), str(k), "")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, f"{path}[{i}]")
    elif isinstance(obj, str):
        yield path, path.rsplit(".", 1)[-1], obj


# --- what the folder holds ---------------------------------------------------------------------------------

def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The `__metadata__` of a safetensors file (header only; no tensor is read), JSON values parsed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
    for key, value in metadata.items():
        try:
            metadata[key] = json.loads(value)
        except (TypeError, ValueError):
            pass
    return metadata


def read_texts(folder: Path, files: list[str]) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, str]]]:
    """(parsed documents: JSON files and safetensors metadata; the text of every file that has text, the
    metadata as JSON; PNG text chunks) of the files to upload."""
    from PIL import Image

    docs, texts, pngs = {}, {}, {}
    for name in files:
        path = folder / name
        if name.endswith(".png"):
            try:
                with Image.open(path) as img:
                    pngs[name] = {str(k): str(v) for k, v in (getattr(img, "text", {}) or {}).items()}
            except OSError:
                pngs[name] = {}
        elif name.endswith(".safetensors"):
            try:
                docs[name] = {"metadata": safetensors_metadata(path)}
                texts[name] = json.dumps(docs[name], ensure_ascii=False)
            except Exception:  # safetensors raises its own errors; validate_folder reports an unreadable file
                continue
        else:
            try:
                texts[name] = path.read_text(encoding="utf-8")
                if name.endswith(".json"):
                    docs[name] = json.loads(texts[name])
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue  # binary, or validate_folder reports it
    return docs, texts, pngs


FIX_TEXT = "remove it and re-render the card (python -m training.card FOLDER)"
FIX_WEIGHTS = ("the weights' metadata is the configuration recorded at export: re-export the folder with "
               "python -m training.train --resume RUN_FOLDER (no further steps), which records the dataset "
               "by its pseudonymised name")


def _fix(name: str, otherwise: str = FIX_TEXT) -> str:
    """How to fix a finding in file `name`: the weights are re-exported, any other file edited."""
    return FIX_WEIGHTS if name.endswith(".safetensors") else otherwise


FIX_FIELD = ("remove it from the file (config.json by hand, then re-render the card: "
             "python -m training.card FOLDER)")
FIX_PATH = ("paths can name patients, places and dates: re-run with relative paths, or edit the field in config.json "
            "and re-render the card (python -m training.card FOLDER)")


def _where(name: str, where: int | str) -> str:
    return f"{name}: line {where}" if isinstance(where, int) else f"{name}: {where}"


def field_problems(docs: dict[str, Any], texts: dict[str, str], pngs: dict[str, dict[str, str]],
                   public: bool) -> tuple[list[str], list[str]]:
    """Patient-identifier fields and DICOM person names (problems), absolute paths (problems for a non-public
    dataset, warnings for a public one), wherever they are: JSON fields, card lines, PNG text chunks."""
    spots = [(name, f"field {path}", key, value) for name, doc in docs.items() for path, key, value in walk(doc)]
    spots += [(name, i + 1, "", line) for name, text in texts.items() if name not in docs
              for i, line in enumerate(text.splitlines())]
    spots += [(name, f"text chunk {k!r}", k, v) for name, chunks in pngs.items() for k, v in chunks.items()]
    problems, warnings = [], []
    for name, where, key, value in spots:
        path = ABS_PATH.search(value) if value else None
        if key and PATIENT_FIELD.search(key):
            problems.append(f"{_where(name, where)} is a patient identifier field ({key}); "
                            f"{_fix(name, FIX_FIELD)}")
        elif value and PERSON_NAME.search(value):
            problems.append(f"{_where(name, where)} holds a DICOM person name ('{_mask(value)}'); "
                            f"{_fix(name, FIX_FIELD)}")
        elif value and RECORD_NUMBER.search(value):
            problems.append(f"{_where(name, where)} holds a medical record number "
                            f"('{_mask(RECORD_NUMBER.search(value).group(0))}'); {_fix(name, FIX_FIELD)}")
        elif path and not public:
            problems.append(f"{_where(name, where)} holds an absolute file path ('{path.group(0)[:6]}…'); "
                            f"{_fix(name, FIX_PATH)}")
        elif path:
            warnings.append(f"{_where(name, where)} holds an absolute file path ('{path.group(0)[:6]}…'): it shows "
                            "this machine's folders (allowed for a public dataset)")
    return problems, warnings


def source_problems(training_data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """A non-public dataset's sources: ids/subjects must not be paths or dates. (problems, warnings)"""
    problems, plain = [], []
    for i, src in enumerate(training_data.get("sources") or []):
        if not isinstance(src, dict):
            continue
        for key in ("id", "subject"):
            value = str(src.get(key) or "")
            if not value or is_pseudonym(value):
                continue
            plain.append(value)
            what = ("an original file path" if ("/" in value or "\\" in value) else
                    "a date (file names and ids often hold birth or scan dates)" if DATE.search(value) else "")
            if what:
                problems.append(f"config.json: field training_data.sources[{i}].{key} is {what} "
                                f"('{_mask(value)}'); re-ingest with python -m training.data (it pseudonymises "
                                "subjects and file ids) and re-train")
    warnings = [f"config.json: {len(plain)} training_data source id(s)/subject(s) are not pseudonyms (subj-…, "
                "file-…): the dataset was made before pseudonymisation or by hand; check they name no one"] if plain else []
    return problems, warnings


def _needles(originals: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(value to look for, what it is, where it is known from): identifiers, subject ids, file paths and their
    distinctive parts, from {original: (kind, source)}."""
    out = []
    for value, (kind, source) in originals.items():
        out.append((value, kind, source))
        parts = re.split(r"[\^/\\]", value) if kind != "file path" else re.split(r"[/\\]", value)
        if kind == "file path":
            parts += [p.split(".", 1)[0] for p in parts]
            parts = [p for p in parts if re.search(r"\d|_|-|\^|[a-z][A-Z]", p)]
        out += [(p, f"part of a {kind}", source) for p in parts if p != value]
    seen, kept = set(), []
    for value, kind, source in out:
        value = value.strip()
        if len(value) >= 3 and not (value.isdigit() and len(value) < 6) and value.lower() not in seen:
            seen.add(value.lower())
            kept.append((value, kind, source))
    return kept


def known_problems(folder: Path, originals: dict[str, tuple[str, str]], docs: dict[str, Any], texts: dict[str, str],
                   pngs: dict[str, dict[str, str]], files: list[str]) -> list[str]:
    """Every original (and its distinctive parts), searched as a whole token (any case) in every text, field
    and chunk, and (6 characters or more) in the raw bytes of every file, weights included."""
    problems = []
    lower = {name: text.lower() for name, text in texts.items()}
    raw = {name: (folder / name).read_bytes() for name in files if (folder / name).is_file()}
    for value, kind, source in _needles(originals):
        token = re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", re.I)
        said = f"the {kind} '{_mask(value)}' of the dataset ({source})"
        found = set()
        for name, text in texts.items():
            if value.lower() not in lower[name] or not token.search(text):
                continue
            fields = [p for p, _, v in walk(docs[name]) if v and token.search(v)] if name in docs else []
            lines = [str(i + 1) for i, line in enumerate(text.splitlines()) if token.search(line)]
            where = f"field {', '.join(fields[:3])}" if fields else f"line {', '.join(lines[:3])}"
            problems.append(f"{name}: {where} contains {said}; {_fix(name)}")
            found.add(name)
        for name, chunks in pngs.items():
            hits = [k for k, v in chunks.items() if token.search(v)]
            if hits:
                problems.append(f"{name}: text chunk {hits[0]!r} contains {said}; {FIX_TEXT}")
                found.add(name)
        needle = value.encode("utf-8", "surrogatepass")
        for name, blob in raw.items():
            if name not in found and len(value) >= 6 and needle.lower() in blob.lower():
                problems.append(f"{name}: its bytes contain {said}; {_fix(name)}")
    return problems


def local_data_path(folder: Path, config: Any) -> Path | None:
    """The dataset file or folder the model was trained on, on this machine: config.json records it under
    its public name only, so it is read from the run folder (training.config.out, whose train_config.json
    training writes locally), or (folders exported before that) from training.config.data itself."""
    recorded = (config.training or {}).get("config") or {}
    for base in (Path.cwd(), ROOT, folder):
        data = str(recorded.get("data") or "")
        if data and (base / data).exists():
            return base / data
        run_config = base / str(recorded.get("out") or "\0") / "train_config.json"
        try:
            data = str(json.loads(run_config.read_text()).get("data") or "")
        except (OSError, ValueError, AttributeError):
            continue
        if data and (Path(data).exists() or (base / data).exists()):
            return Path(data) if Path(data).exists() else base / data
    return None


def locate_originals(folder: Path, config: Any, keys_file: str | Path | None
                     ) -> tuple[dict[str, tuple[str, str]] | None, list[str]]:
    """({original: (kind, source)} to search for, problems): what the dataset's keys file lists (--keys, else
    `<data>.keys.json` of the local data path) and that path itself; None when no keys file is found."""
    data = local_data_path(folder, config)
    originals = {str(data): ("file path", "the local path training read it from")} if data else {}
    if keys_file:
        try:
            keys = Keys.open(_existing(Path(keys_file)))
        except (KeysError, FileNotFoundError) as exc:
            return None, [f"--keys {keys_file}: {exc}"]
    else:
        from ..data import keys_for
        path = keys_for(data) if data else None
        if path is None or not path.is_file():
            return None, []
        try:
            keys = Keys.open(path)
        except KeysError as exc:
            return None, [str(exc)]
    listed = {value: (kind, f"listed in {keys.path.name}") for value, kind in keys.originals().items()}
    return {**listed, **originals}, []


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"no such keys file {path}")
    return path


def image_problems(folder: Path, files: list[str], config: Any, pngs: dict[str, dict[str, str]], readme: str,
                   allow_real_images: bool) -> tuple[list[str], list[str]]:
    """Real-image PNGs of a non-public dataset: refused, or (allowed) a warning and the card must say so."""
    eval_name = str((config.metrics or {}).get("dataset") or config.training_data.get("name") or "")
    try:
        eval_name = str(json.loads((folder / "eval.json").read_text())["real_data"]["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if images_public(config.training_data, eval_name):
        return [], []
    real = [n for n in files if n.endswith(".png") and n not in PLOT_FILES and pngs.get(n, {}).get("synthetic") != "true"]
    problems, warnings = [], []
    for name in real:
        what = (f"{name}: shows REAL slices of the training data ('{eval_name or '?'}', not marked public: "
                "ingested from your files)" + (" beside their nearest synthetic images" if name == "eval.png" else ""))
        if not allow_real_images:
            problems.append(f"{what}; real images of a non-public dataset are not published by default. Remove it "
                            f"(rm FOLDER/{name}, then python -m training.card FOLDER), or pass "
                            "--allow-real-images if you have the right to publish these images")
            continue
        warnings.append(f"{what}: publishing them because --allow-real-images was given")
        if name == "eval.png" and REAL_IMAGES_NOTE not in readme:
            problems.append("README.md does not say that eval.png shows real training slices; re-render it with "
                            "python -m training.card FOLDER")
    return problems, warnings


FIX_LEAK = ("retrain with --dp-epsilon (differentially private), or with fewer steps or more subjects, then run "
            "python -m training.audit FOLDER --data DATA.npz again; or pass --accept-privacy-risk to publish it "
            "anyway (the card will say so)")


def leak_problems(folder: Path, config: Any) -> tuple[list[str], list[str]]:
    """Why the model's pixels may give its (non-public) training slices away: no audit of these weights, or an audit
    whose attack beats both controls beyond the threshold. DP-trained models pass on their ε. (problems, notes)"""
    from medgan.files import file_digest

    from ..evaluation.audit_report import (LEAK_THRESHOLD, PRIVACY_FILE, AuditError, largest_lower_bound, read,
                                           split_caveat)
    from .privacy_record import dp_record

    if dataset_public(config.training_data):
        return [], []
    dp = dp_record(config)
    if dp is not None:
        from ..gan.dp import epsilon

        recomputed = epsilon(dp["noise_multiplier"], dp["sample_rate"], dp["steps"], dp["delta"])
        if abs(recomputed - dp["epsilon"]) > 1e-4 * max(1.0, recomputed):
            return [f"config.json: training.dp records ε = {dp['epsilon']:g}, but Opacus' accountant gives "
                    f"{recomputed:g} for its noise multiplier, sample rate and steps; retrain (the record is not "
                    "the training's)"], []
        return [], [f"differentially private training (ε = {dp['epsilon']:.3g}, δ = {dp['delta']:.3g}): passes on "
                    "its ε"]
    name = config.training_data.get("name") or "its dataset"
    try:
        report = read(folder)
    except AuditError as exc:
        return [f"{exc}; run python -m training.audit FOLDER --data DATA.npz again"], []
    if report is None:
        return [f"no {PRIVACY_FILE}: this model was trained on '{name}', which is not marked public, and its images "
                "have not been audited for membership leakage; run python -m training.audit FOLDER --data DATA.npz (it "
                f"writes {PRIVACY_FILE} and the card's Privacy audit section), or retrain with --dp-epsilon; or pass "
                "--accept-privacy-risk to publish it anyway (the card will say so)"], []
    if report.get("weights_sha256") != file_digest(folder / "model.safetensors"):
        return [f"{PRIVACY_FILE} audits other weights than this model.safetensors; run python -m training.audit "
                "FOLDER again"], []
    bound, where = largest_lower_bound(report["black_box"])
    if bound > LEAK_THRESHOLD:
        return [f"{PRIVACY_FILE}: the membership-inference attack beats both controls in {where}: the lower 95 % "
                f"bound of its advantage is {bound:+.3f}, above the threshold {LEAK_THRESHOLD:+.2f}, so the model may "
                f"give training slices of '{name}' away"
                + (f" (but {split_caveat(report)})" if split_caveat(report) else "") + f"; {FIX_LEAK}"], []
    return [], [f"{PRIVACY_FILE}: no membership advantage beyond the threshold (largest lower 95 % bound "
                f"{bound:+.3f}, threshold {LEAK_THRESHOLD:+.2f})"]


def check_folder(folder: str | Path, files: list[str], config: Any, *, allow_real_images: bool = False,
                 keys_file: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, warnings) about patient data in the files to upload; see the module docstring."""
    folder = Path(folder)
    docs, texts, pngs = read_texts(folder, files)
    public = dataset_public(config.training_data)
    problems, warnings = field_problems(docs, texts, pngs, public)
    if not public:
        more, said = source_problems(config.training_data)
        problems, warnings = problems + more, warnings + said
    originals, more = locate_originals(folder, config, keys_file)
    problems += more
    if originals is not None:
        problems += known_problems(folder, originals, docs, texts, pngs, files)
    elif not public and not more:
        warnings.append("no pseudonym keys file found for this model's dataset (looked for <data>.keys.json of the "
                        "data named in the run folder's train_config.json, config.json's training.config.out): "
                        "identifiers were checked by pattern only; pass --keys DATA.keys.json to check against "
                        "the originals")
    more, said = image_problems(folder, files, config, pngs, texts.get("README.md", ""), allow_real_images)
    return list(dict.fromkeys(problems + more)), warnings + said


__all__ = ["REAL_IMAGES_NOTE", "check_folder", "dataset_public", "images_public"]
