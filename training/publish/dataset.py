"""Publishing a parquet dataset (`python -m medgan.dataset MODEL --format parquet`) as a Hugging Face dataset repo:
`python -m training.push --dataset DIR --repo ORG/NAME [--model weights/<id>] [--dry-run]`.

The checks a model push makes, for a dataset:
- only the dataset's files (README.md, dataset.json, data/train-*.parquet; no links, pickles or leftovers), every
  shard complete and the rows numbering dataset.json's count;
- every row synthetic: the `synthetic` column true in every row, and every image's PNG text saying
  Synthetic=true;
- the card present and valid: its YAML parses (huggingface_hub's DatasetCard), names the files' features (the
  ClassLabel names included) and the row count, and says the images are not for diagnosis;
- nothing of a non-public training set in the card or dataset.json (training.publish.privacy's patterns, the training
  data's source ids and subjects, and the originals of its pseudonym keys file when one is found). The training
  data is the model's, read from its folder (found by id among the local models, or --model), whose weights
  must be those the dataset was generated with.
"""
from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from medgan.dataset import DATA_CARD, DATA_DIR, DATASET_JSON, PARQUET, features
from medgan.dataset.card import NOT_FOR_DIAGNOSIS
from medgan.errors import MedganError

from .hub_api import PushError, PushResult, check_repo_id, hub_api

EXPECTED = (DATA_CARD, DATASET_JSON)
SHARD = re.compile(rf"^{DATA_DIR}/train-(\d{{5}})-of-(\d{{5}})\.parquet$")


def _files(folder: Path) -> tuple[list[str], list[str]]:
    """(the files to upload, relative; problems with what else is there)."""
    problems, files = [], []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            problems.append(f"{name}: a link; only plain files are uploaded")
        elif path.is_dir():
            if name != DATA_DIR:
                problems.append(f"{name}/: not a folder of a parquet dataset (only {DATA_DIR}/)")
        elif name in EXPECTED or SHARD.match(name):
            files.append(name)
        else:
            problems.append(f"{name}: not a file of a parquet dataset (README.md, dataset.json, "
                            f"{DATA_DIR}/train-KKKKK-of-NNNNN.parquet); remove it")
    return files, problems + [f"{name} is missing" for name in EXPECTED if name not in files]


def _rows(folder: Path, info: dict[str, Any], shards: list[str]) -> tuple[list[str], Any]:
    """Problems with the shards and their rows (every row synthetic), and the first shard's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    problems, schema, total = [], None, 0
    want = [f"{DATA_DIR}/train-{k:05d}-of-{info.get('shards', 0):05d}.parquet" for k in range(info.get("shards", 0))]
    problems += [f"{name} is missing: the export is incomplete (re-run its command to finish it)"
                 for name in want if name not in shards]
    for name in shards:
        try:
            table = pq.read_table(folder / name, columns=["image", "synthetic"])
            schema = schema or pq.read_schema(folder / name)
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{name}: not a readable parquet file ({str(exc)[:120]})")
            continue
        total += table.num_rows
        flags = table.column("synthetic").to_pylist()
        rows = [i for i, flag in enumerate(flags) if flag is not True]
        if rows:
            problems.append(f"{name}: {len(rows)} row(s) not marked synthetic (rows {rows[:5]}); every row of a "
                            "published dataset must be synthetic")
        for i, image in enumerate(table.column("image").to_pylist()):
            with Image.open(io.BytesIO(image["bytes"])) as png:
                if getattr(png, "text", {}).get("Synthetic") != "true":
                    problems.append(f"{name}: row {i}'s image does not say Synthetic=true in its PNG text")
                    break
    if total != info.get("count"):
        problems.append(f"the shards hold {total} rows, dataset.json says {info.get('count')}")
    return problems, schema


def _card(folder: Path, info: dict[str, Any], schema: Any) -> list[str]:
    """Problems with README.md, the dataset card; `schema` is a shard's (its features are the truth)."""
    from huggingface_hub import DatasetCard

    fix = "re-run the export command (python -m medgan.dataset … --format parquet) to rewrite it"
    try:
        card = DatasetCard.load(folder / DATA_CARD)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{DATA_CARD}: not a valid dataset card ({str(exc)[:160]}); {fix}"]
    meta, problems = card.data.to_dict(), []
    problems += [f"{DATA_CARD}: the card's metadata has no {key}; {fix}"
                 for key in ("license", "configs", "dataset_info") if not meta.get(key)]
    stored = json.loads((schema.metadata or {}).get(b"huggingface", b"{}")).get("info", {}).get("features") \
        if schema is not None else None
    classes = (stored or {}).get("label", {}).get("names", [])
    named = [f.get("name") for f in (meta.get("dataset_info") or {}).get("features", [])]
    if stored is not None and (stored != features(classes) or named != list(stored)):
        problems.append(f"{DATA_CARD}: the card names the features {named}, the files hold {list(stored)} (or "
                        f"other class names); {fix}")
    splits = (meta.get("dataset_info") or {}).get("splits") or [{}]
    if splits[0].get("num_examples") != info.get("count"):
        problems.append(f"{DATA_CARD}: num_examples {splits[0].get('num_examples')} is not the {info.get('count')} "
                        f"rows; {fix}")
    if NOT_FOR_DIAGNOSIS not in card.text:
        problems.append(f"{DATA_CARD}: does not say that the images are not for diagnosis; {fix}")
    return problems


def _model_folder(info: dict[str, Any], model: str | Path | None) -> tuple[Any, Path | None, list[str]]:
    """(config, folder, problems) of the model the dataset was generated with, its weights checked."""
    from medgan.config import ModelConfig
    from medgan.dataset import weights_revision

    folder = Path(model) if model else None
    if folder is None:
        from medgan.registry import get_registry
        local = next((s for s in get_registry().sources if s.name == "local"), None)
        try:
            folder = local.folder(str(info.get("model"))) if local is not None else None
        except MedganError:
            folder = None
    if folder is None or not (folder / "config.json").is_file():
        return None, None, [f"cannot find the model {info.get('model')!r} to check the card against its training "
                            "data; pass --model weights/<id>"]
    config = ModelConfig.load(folder)
    revision = weights_revision(folder)
    if revision != info.get("revision"):
        return config, folder, [f"{folder.name}: its weights are revision {revision}, the dataset was generated "
                                f"with {info.get('revision')}; export it again from these weights"]
    return config, folder, []


def _privacy(folder: Path, files: list[str], config: Any, model_folder: Path, keys_file: str | Path | None
             ) -> tuple[list[str], list[str]]:
    """Nothing of a non-public training set in README.md or dataset.json; (problems, warnings)."""
    from .privacy import dataset_public, field_problems, known_problems, locate_originals, read_texts

    texts_of = [name for name in files if name in EXPECTED]
    docs, texts, _ = read_texts(folder, texts_of)
    public = dataset_public(config.training_data)
    problems, warnings = field_problems(docs, texts, {}, public)
    sources = [] if public else [s for s in config.training_data.get("sources") or [] if isinstance(s, dict)]
    for key, value in ((key, str(s.get(key) or "")) for s in sources for key in ("id", "subject")):
        token = re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", re.I)
        problems += [f"{name}: names the training data's {key} '{value[:2]}…' (the training data is not public); "
                     "remove it" for name, text in texts.items() if len(value) >= 3 and token.search(text)]
    originals, more = locate_originals(model_folder, config, keys_file)
    if originals is not None:
        problems += known_problems(folder, originals, docs, texts, {}, texts_of)
    return problems + more, warnings


def validate_dataset_folder(folder: str | Path, *, model: str | Path | None = None,
                            keys_file: str | Path | None = None) -> list[str]:
    """The files to upload (relative paths), after every check passed; PushError lists every problem found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder")
    files, problems = _files(folder)
    try:
        info = json.loads((folder / DATASET_JSON).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        info = {}
    if info.get("synthetic") is not True or info.get("format") != PARQUET:
        problems.append(f"{DATASET_JSON}: not a synthetic parquet dataset of medgan (python -m medgan.dataset MODEL "
                        "--format parquet …)")
    else:
        found, schema = _rows(folder, info, [f for f in files if SHARD.match(f)])
        problems += found
        if DATA_CARD in files:
            problems += _card(folder, info, schema)
        config, model_folder, found = _model_folder(info, model)
        problems += found
        if config is not None:
            found, warnings = _privacy(folder, files, config, model_folder, keys_file)
            problems += found
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
    if problems:
        raise PushError(f"{folder} cannot be published:\n  - " + "\n  - ".join(dict.fromkeys(problems)))
    return files


def push_dataset(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                 endpoint: str | None = None, token: str | None = None, message: str | None = None,
                 files: list[str] | None = None, model: str | Path | None = None) -> PushResult:
    """Validate, create the dataset repo (if needed) and upload the folder in one commit."""
    from medgan.files import file_digest

    folder = Path(folder)
    check_repo_id(repo_id)
    if files is None:
        files = validate_dataset_folder(folder, model=model)
    info = json.loads((folder / DATASET_JSON).read_text())
    api = hub_api(endpoint, token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    branch = revision or "main"
    if branch != "main":
        api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset", revision=branch,
                               allow_patterns=files, commit_message=message or
                               f"Upload {info['count']} synthetic images of {info['model']} (MedGAN Studio dataset)")
    return PushResult(repo_id=repo_id, revision=commit.oid, commit_url=commit.commit_url, branch=branch,
                      sha256={name: file_digest(folder / name) for name in files})


__all__ = ["push_dataset", "validate_dataset_folder"]
