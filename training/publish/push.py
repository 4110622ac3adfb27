"""Publish a model folder to the Hugging Face Hub (pinned by commit, listed in the Hub catalogue), a synthetic dataset
as a dataset repo, or the app to a Space.

    python -m training.push weights/<id> --repo ORG/NAME [--private] [--revision BRANCH] [--dry-run]
                            [--endpoint URL] [--catalogue weights/hub.json] [--id ID] [--message TEXT]
                            [--allow-real-images] [--keys DATA.keys.json] [--accept-privacy-risk]
    python -m training.push --space ORG/SPACE [--private] [--dry-run] [--endpoint URL]
    python -m training.push --dataset DIR --repo ORG/NAME [--model weights/<id>] [--private] [--revision BRANCH]
                            [--dry-run] [--endpoint URL] [--message TEXT] [--keys DATA.keys.json]

A model folder is validated first (config loads, weights load and generate with medgan, the card parses with
its metadata, no pickle and no unexpected files) and checked for patient data (training.privacy): no patient
identifiers or original file paths (checked against the dataset's pseudonym keys file when found, or --keys),
no real images of a dataset not marked public unless --allow-real-images; and for such a dataset a membership-
inference audit of these weights (privacy.json, python -m training.audit) whose attack does not beat both controls
beyond the threshold, or differentially private training (--dp-epsilon): `--accept-privacy-risk` publishes it
anyway and records that on the card. The upload needs a token (HF_TOKEN or `hf auth login`) and
prints the commit URL and the commit sha to pin. `--catalogue` records {id, repo_id, revision, sha256 of every
file} in MedGAN Studio's Hub catalogue so the app lists the model and verifies what it downloads.
`--dry-run` validates and lists what would be uploaded, without any network.

`--dataset` publishes a parquet dataset (`python -m medgan.dataset MODEL --format parquet`) as a dataset repo,
after the same kind of checks (training.publish.dataset): every row synthetic, the dataset card present and
valid, nothing of a non-public training set in it; `--dry-run` lists its files.

`--space` uploads the app itself (the git-tracked app.py, medgan/, weights/, docs/, requirements.txt, README.md,
LICENSE) to a Gradio Space, with the README's `models:` filled in from the catalogue.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from medgan.errors import MedganError
from medgan.files import atomic_write, file_digest
from medgan.generator import PICKLE_SUFFIXES, WEIGHTS_FILE

from .. import ROOT
from ..gan.discriminator import DISCRIMINATOR_FILE
from .dataset import push_dataset, validate_dataset_folder
from .hub_api import PushError, PushResult, check_repo_id, hub_api, listing

REQUIRED = ("config.json", WEIGHTS_FILE, "README.md")
ALLOWED = (*REQUIRED, "eval.json", "samples.png", "loss.png", "eval.png", "fid.png", "downstream.json",
           "downstream.png", "privacy.json", ".gitattributes")
# What a Space needs to run the app (git-tracked files under these paths only: no tests, runs, caches).
SPACE_PATHS = ("app.py", "requirements.txt", "packages.txt", "README.md", "LICENSE", "medgan/", "weights/", "docs/")


def _looks_pickled(path: Path) -> bool:
    """Pickle protocol 2+ starts with 0x80; torch.save's zip format with PK. Checked without unpickling."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:1] == b"\x80" or head == b"PK"


# --- validation --------------------------------------------------------------------------------------------

def validate_folder(folder: str | Path, *, allow_real_images: bool = False,
                    keys_file: str | Path | None = None, accept_privacy_risk: bool = False) -> list[str]:
    """The files to upload, after every check passed; PushError lists every problem found. Privacy checks
    (training.privacy): no patient identifiers or file paths, no real images of a non-public dataset unless
    `allow_real_images` (warned about on stderr); `keys_file`: the dataset's pseudonym keys, if not found; a
    non-public dataset's model audited without a leak or DP-trained, unless `accept_privacy_risk` (warned)."""
    from huggingface_hub import ModelCard

    from medgan.config import ModelConfig
    from medgan.generator import Generator

    from .card import check_card_text

    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder")
    problems: list[str] = []
    names = sorted(p.name for p in folder.iterdir())
    for name in list(names):
        path = folder / name
        if path.is_dir() or path.is_symlink():
            problems.append(f"{name}: only plain files are uploaded (a folder or link is here)")
        elif name == DISCRIMINATOR_FILE:  # training state for --init-from: stays here (not needed to
            names.remove(name)             # sample, and a discriminator is the model that has seen the data)
        elif name.endswith(PICKLE_SUFFIXES) or (name != WEIGHTS_FILE and name.endswith(".safetensors")):
            problems.append(f"{name}: pickle-format or extra weights files are never published; "
                            f"weights must be {WEIGHTS_FILE}")
        elif name not in ALLOWED:
            problems.append(f"{name}: not an expected model file (allowed: {', '.join(ALLOWED)})")
        elif name == WEIGHTS_FILE and _looks_pickled(path):
            problems.append(f"{name}: is a pickle/zip archive, not safetensors")
            names.remove(name)  # not even opened further
    problems += [f"{name} is missing" for name in REQUIRED if name not in names and not (folder / name).exists()]
    config = None
    if "config.json" in names:
        try:
            config = ModelConfig.load(folder)
        except MedganError as exc:
            problems.append(f"config.json: {exc}")
    if config is not None and WEIGHTS_FILE in names:
        try:  # load AND run: the weights must fit the config
            images = Generator.from_folder(folder, device="cpu").generate(1, seed=0, output_type="np")
            if images.shape[1] != config.resolution:
                problems.append(f"weights give {images.shape[1:]} images, config says {config.resolution}²")
        except MedganError as exc:
            problems.append(f"{WEIGHTS_FILE}: {exc}")
    if "README.md" in names:
        fix = f"re-render it with: python -m training.card {folder}"
        try:
            text = (folder / "README.md").read_text()
            check_card_text(text)
            card = ModelCard.load(folder / "README.md")  # the same parse the Hub client does
            results = {r.metric_type: r.metric_value for r in (card.data.eval_results or [])}
            if config is not None:
                fid = config.metrics.get("fid")
                if isinstance(fid, (int, float)) and not abs(results.get("fid", float("nan")) - fid) <= 1e-4 * max(1, fid):
                    problems.append(f"README.md: the card's FID {results.get('fid')} is not config.json's {fid}; {fix}")
                if results and card.data.model_name != config.id:
                    problems.append(f"README.md: model-index names {card.data.model_name!r}, not {config.id!r}; {fix}")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"README.md: unreadable ({exc})")
        except ValueError as exc:
            problems.append(f"README.md: {exc}; {fix}")
    if config is not None:
        problems += privacy_problems(folder, [n for n in names if n in ALLOWED], config,
                                     allow_real_images=allow_real_images, keys_file=keys_file,
                                     accept_privacy_risk=accept_privacy_risk)
    if problems:
        raise PushError(f"{folder} cannot be published:\n  - " + "\n  - ".join(problems))
    return [n for n in names if n in ALLOWED]


def privacy_problems(folder: Path, files: list[str], config: Any, *, allow_real_images: bool,
                     keys_file: str | Path | None, accept_privacy_risk: bool) -> list[str]:
    """training.privacy's checks of the files to upload (patient data, then the model's pixels); warnings and notes
    go to stderr, and so do the pixel problems that --accept-privacy-risk overrides."""
    from .privacy import check_folder, leak_problems
    from .privacy_record import OVERRIDE_KEY

    problems, warnings = check_folder(folder, files, config, allow_real_images=allow_real_images, keys_file=keys_file)
    leaks, notes = leak_problems(folder, config)
    if leaks and accept_privacy_risk:
        recorded = OVERRIDE_KEY in config.extra
        warnings += [f"{leak}: publishing it because --accept-privacy-risk was given" + (
            "" if recorded else " (a push records that in config.json and on the card)") for leak in leaks]
    else:
        problems += leaks
    for warning in warnings + notes:
        print(f"warning: {warning}", file=sys.stderr)
    return problems


def record_privacy_risk(folder: str | Path) -> bool:
    """--accept-privacy-risk on a push: the refusal it overrides goes into config.json (extra.privacy_risk_accepted)
    and the card is re-rendered to say so; a stale record is dropped when the folder now passes. True if changed."""
    from medgan.config import ModelConfig

    from .card import write_card
    from .privacy import leak_problems
    from .privacy_record import OVERRIDE_KEY

    folder = Path(folder)
    config = ModelConfig.load(folder)
    leaks = leak_problems(folder, config)[0]
    wanted = {"reason": "; ".join(leaks)} if leaks else None
    if config.extra.get(OVERRIDE_KEY) == wanted:
        return False
    config.extra = {k: v for k, v in config.extra.items() if k != OVERRIDE_KEY}
    if wanted:
        config.extra[OVERRIDE_KEY] = wanted
    config.save(folder)
    write_card(folder)
    return True


# --- Hub access --------------------------------------------------------------------------------------------

def push(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         endpoint: str | None = None, token: str | None = None, message: str | None = None,
         files: list[str] | None = None, allow_real_images: bool = False,
         keys_file: str | Path | None = None, accept_privacy_risk: bool = False) -> PushResult:
    """Validate, create the repo (if needed), upload the folder in one commit; returns the pinned revision.

    `files`: validate_folder's result when the caller has just run it (the CLI does, to list them first).
    `allow_real_images`, `keys_file`, `accept_privacy_risk`: see validate_folder; the last is recorded on the card.
    """
    from medgan.config import ModelConfig

    folder = Path(folder)
    check_repo_id(repo_id)
    if files is None:
        if accept_privacy_risk:
            record_privacy_risk(folder)
        files = validate_folder(folder, allow_real_images=allow_real_images, keys_file=keys_file,
                                accept_privacy_risk=accept_privacy_risk)
    model_id = ModelConfig.load(folder).id
    api = hub_api(endpoint, token)
    sha = {name: file_digest(folder / name) for name in files}
    api.create_repo(repo_id, private=private, exist_ok=True)
    branch = revision or "main"
    if branch != "main":
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=branch, allow_patterns=files,
                             commit_message=message or f"Upload {model_id} (MedGAN Studio model folder)")
    return PushResult(repo_id=repo_id, revision=info.oid, commit_url=info.commit_url, branch=branch, sha256=sha)


# --- the catalogue -----------------------------------------------------------------------------------------

def catalogue_entry(model_id: str, result: PushResult) -> dict[str, Any]:
    return {"id": model_id, "repo_id": result.repo_id, "revision": result.revision, "sha256": dict(result.sha256)}


def read_catalogue(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"models": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PushError(f"{path}: unreadable Hub catalogue ({exc}); fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        raise PushError(f"{path}: not a Hub catalogue (expected {{\"models\": [...]}})")
    data.setdefault("models", [])
    return data


def update_catalogue(path: str | Path, entry: dict[str, Any]) -> Path:
    """Add or replace (by id) one entry of the Hub catalogue file; other entries are kept; written atomically."""
    path = Path(path)
    data = read_catalogue(path)
    data["models"] = sorted([m for m in data["models"] if m.get("id") != entry["id"]] + [entry],
                            key=lambda m: str(m.get("id")))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(data, indent=2) + "\n")


# --- the Space ---------------------------------------------------------------------------------------------

FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a README (Space or model card); {} when there is none."""
    match = FRONT_MATTER.match(text)
    data = yaml.safe_load(match.group(1)) if match else None
    return data if isinstance(data, dict) else {}


def gradio_pin(requirements: str) -> str | None:
    """The exact gradio version pinned in a requirements file (`gradio==X`, extras allowed)."""
    match = re.search(r"^\s*gradio(?:\[[^\]]*\])?\s*==\s*([\w.]+)", requirements, re.M)
    return match.group(1) if match else None


def catalogue_repo_ids(path: Path) -> list[str]:
    return sorted({str(m["repo_id"]) for m in read_catalogue(path)["models"] if m.get("repo_id")})


def space_readme(root: Path, catalogue: Path) -> bytes:
    """README.md for the Space: the same text with `models:` set to the catalogue's repos (the Hub links them)."""
    text = (root / "README.md").read_text()
    match = FRONT_MATTER.match(text)
    meta = front_matter(text)
    if not match or meta.get("sdk") != "gradio":
        raise PushError("README.md must start with Spaces front matter (sdk: gradio)")
    pin = gradio_pin((root / "requirements.txt").read_text())
    if str(meta.get("sdk_version")) != pin:
        raise PushError(f"README.md sdk_version {meta.get('sdk_version')!r} differs from requirements.txt's "
                        f"gradio=={pin}: the Space would run another Gradio than the one tested")
    models = catalogue_repo_ids(catalogue)
    if not models and "models" not in meta:
        return text.encode()  # nothing published: the README as committed
    meta["models"] = models
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{head}---\n{text[match.end():]}".encode()


def space_files(root: Path) -> list[str]:
    """Git-tracked files the Space needs (see SPACE_PATHS), pickles refused."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *SPACE_PATHS], cwd=root, check=True,
                             capture_output=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PushError(f"cannot list the app's files with git in {root}: {exc}") from None
    files = sorted(f for f in out.split("\0") if f and (root / f).is_file()
                   and Path(f).name != DISCRIMINATOR_FILE)  # training state: the app never loads it
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise PushError(f"pickle files are never uploaded: {', '.join(pickles)}")
    for needed in ("app.py", "requirements.txt", "README.md"):
        if needed not in files:
            raise PushError(f"{needed} is not tracked by git in {root}; commit it first")
    return files


def deploy_space(repo_id: str, *, root: str | Path = ROOT, catalogue: str | Path | None = None,
                 private: bool = False, endpoint: str | None = None, token: str | None = None,
                 message: str | None = None) -> PushResult:
    """Create the Gradio Space (if needed) and upload the app's tracked files in one commit."""
    from huggingface_hub import CommitOperationAdd

    root = Path(root)
    check_repo_id(repo_id)
    files = space_files(root)
    readme = space_readme(root, Path(catalogue) if catalogue else root / "weights" / "hub.json")
    api = hub_api(endpoint, token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=readme if f == "README.md" else str(root / f))
           for f in files]
    # create_commit (not upload_folder): exactly these files in one commit, README metadata checked by the Hub.
    info = api.create_commit(repo_id, ops, repo_type="space",
                             commit_message=message or "Deploy MedGAN Studio (app, medgan, weights)")
    sha = {f: hashlib.sha256(readme).hexdigest() if f == "README.md" else file_digest(root / f) for f in files}
    return PushResult(repo_id=repo_id, revision=info.oid, commit_url=info.commit_url, branch="main", sha256=sha)


# --- CLI ---------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.push", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("folder", nargs="?", type=Path, help="model folder (weights/<id>)")
    p.add_argument("--repo", help="Hub model repo ORG/NAME (with --dataset: the dataset repo)")
    p.add_argument("--space", help="deploy the app to the Space ORG/NAME instead of pushing a model")
    p.add_argument("--dataset", type=Path, help="publish this parquet dataset folder as the dataset repo --repo")
    p.add_argument("--model", type=Path, help="with --dataset: the model folder it was generated from (default: "
                                              "found by its id among the local models)")
    p.add_argument("--private", action="store_true", help="create the repo private (ignored if it exists)")
    p.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--catalogue", type=Path, help="Hub catalogue to add the pinned entry to (weights/hub.json)")
    p.add_argument("--id", help="model id in the catalogue (default: config.json's id)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--dry-run", action="store_true", help="validate and list the files; no network")
    p.add_argument("--allow-real-images", action="store_true",
                   help="publish real-image panels (eval.png) of a dataset not marked public (warned; the card "
                        "says what they show). Patient identifiers are never allowed")
    p.add_argument("--accept-privacy-risk", action="store_true",
                   help="publish a model of a dataset not marked public although it has no membership-inference "
                        "audit (privacy.json) or its audit shows a leak beyond the threshold; recorded in config.json "
                        "and on the card")
    p.add_argument("--keys", help="the dataset's pseudonym keys file (DATA.keys.json) to check the folder against, "
                                  "when it is not found from config.json's training command")
    args = p.parse_args(argv)
    if args.space and (args.folder or args.repo or args.dataset):
        p.error("--space deploys the app; give either FOLDER --repo ORG/NAME or --space ORG/NAME")
    if args.dataset and (args.folder or not args.repo or args.catalogue or args.id):
        p.error("--dataset DIR takes --repo ORG/NAME (a dataset repo), and no model FOLDER, --catalogue or --id")
    if not args.space and not args.dataset and not (args.folder and args.repo):
        p.error("give FOLDER and --repo ORG/NAME (or --dataset DIR --repo ORG/NAME, or --space ORG/NAME)")
    if args.model and not args.dataset:
        p.error("--model goes with --dataset")
    if args.id is not None and not re.match(r"^[A-Za-z0-9][\w.-]{0,127}$", args.id):
        p.error(f"--id must be letters, digits, '.', '_' or '-' (got {args.id!r})")
    return args


def _main(args: argparse.Namespace) -> int:
    if args.space:
        root = ROOT
        files = space_files(root)
        catalogue = args.catalogue or root / "weights" / "hub.json"
        space_readme(root, catalogue)  # validates the front matter even on a dry run
        print(f"Space {args.space} (sdk gradio), {len(files)} git-tracked files:")
        print(listing(root, files))
        if args.dry_run:
            print("dry run: nothing uploaded")
            return 0
        result = deploy_space(args.space, root=root, catalogue=catalogue, private=args.private,
                              endpoint=args.endpoint, message=args.message)
        print(f"commit: {result.commit_url}\nrevision: {result.revision}")
        return 0

    check_repo_id(args.repo)
    if args.dataset:
        return _main_dataset(args)
    if args.accept_privacy_risk and not args.dry_run and record_privacy_risk(args.folder):
        print(f"recorded --accept-privacy-risk in {args.folder / 'config.json'} and on the card", file=sys.stderr)
    files = validate_folder(args.folder, allow_real_images=args.allow_real_images, keys_file=args.keys,
                            accept_privacy_risk=args.accept_privacy_risk)
    print(f"{args.folder} is valid; to {args.repo} ({args.revision or 'main'}):")
    print(listing(args.folder, files))
    if args.dry_run:
        print("dry run: nothing uploaded" + (f", {args.catalogue} unchanged" if args.catalogue else ""))
        return 0
    result = push(args.folder, args.repo, private=args.private, revision=args.revision, endpoint=args.endpoint,
                  message=args.message, files=files)
    print(f"commit: {result.commit_url}\nrevision: {result.revision}  (pin this: hf_hub_download(..., "
          f"revision=\"{result.revision}\"))")
    if args.catalogue:
        from medgan.config import ModelConfig

        entry = catalogue_entry(args.id or ModelConfig.load(args.folder).id, result)
        update_catalogue(args.catalogue, entry)
        print(f"catalogue: {args.catalogue} now lists {entry['id']!r} -> {entry['repo_id']}@{entry['revision'][:12]}")
    return 0


def _main_dataset(args: argparse.Namespace) -> int:
    files = validate_dataset_folder(args.dataset, model=args.model, keys_file=args.keys)
    print(f"{args.dataset} is a valid dataset; to the dataset repo {args.repo} ({args.revision or 'main'}):")
    print(listing(args.dataset, files))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    result = push_dataset(args.dataset, args.repo, private=args.private, revision=args.revision,
                          endpoint=args.endpoint, message=args.message, files=files)
    print(f"commit: {result.commit_url}\nrevision: {result.revision}  (load it: datasets.load_dataset("
          f"\"{result.repo_id}\", revision=\"{result.revision}\"))")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Hub/HTTP errors: say what failed, without a traceback wall
        if os.environ.get("MEDGAN_DEBUG"):
            raise
        print(f"error: upload failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
