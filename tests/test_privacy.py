"""Issue 16: patient data never reaches what is published. Tiny DICOMs carrying distinctive PatientID/PatientName/
PatientBirthDate values in a folder and files named after the patient are ingested (pseudonymised: the key and
mapping stay in `<dataset>.keys.json`), a tiny model is trained and exported with its card, and none of those values
may appear in config.json, README.md, any PNG (text chunks or bytes) or what `training.push` uploads (to the fake
Hub on 127.0.0.1). Push refuses planted identifiers and real-image panels of a non-public dataset (unless
--allow-real-images); built-ins keep their public names; the same key gives the same pseudonyms."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_hub import fake_hub
from helpers import ROOT, patient_dicoms
from PIL import Image

from training import data as D
from training.data import cli as data_cli
from training.publish import privacy
from training.publish import push as push_mod
from training.publish.card import write_card
from training.data.pseudonyms import Keys, is_pseudonym, journal_path, keys_path

PATIENTS = [("PID-424242", "DOE^JANE", "19700101"), ("PID-515151", "ROE^RICHARD", "19810212"),
            ("PID-616161", "POE^EDGAR", "19920323")]
FOLDER = "JaneDoe_2024-05-01"
SECRETS = [v for p in PATIENTS for v in p] + [FOLDER, "2024-05-01", "JaneDoe", "DOE_JANE", "ROE_RICHARD", "POE_EDGAR"]
TINY = ["--size", "32", "--batch-size", "8", "--base-width", "4", "--d-width", "8", "--steps", "2", "--threads", "1",
        "--log-every", "1", "--sample-every", "1000", "--ckpt-every", "1000"]
REPO = "medgan-test/private-tiny"


def make_dicoms(root: Path, per_patient: int = 6) -> Path:
    """`root/JaneDoe_2024-05-01/DOE_JANE_19700101_3.dcm`…: MR_small with the patients' identifiers and shifted pixels."""
    return patient_dicoms(root / FOLDER, PATIENTS, per_patient, shift=2)


def leaks(blob: bytes) -> list[str]:
    """The distinctive values found in `blob` (any case)."""
    low = blob.lower()
    return [s for s in SECRETS if s.lower().encode() in low]


def png_text(path: Path) -> str:
    with Image.open(path) as img:
        return json.dumps(dict(getattr(img, "text", {}) or {}))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Ingested (CLI), trained (2 steps) and audited for membership leakage (pixel space: a push of a non-public
    dataset's model needs privacy.json) from the tiny DICOMs, all with relative paths from this folder."""
    from training.evaluation.audit import main as audit_main
    from training.gan.cli import main as train_main

    root = tmp_path_factory.mktemp("privacy")
    make_dicoms(root / "scans")
    with contextlib.chdir(root):
        assert data_cli.main(["scans", "--size", "32", "--out", "data/ds.npz", "--quiet"]) == 0
        assert train_main(["--data", "data/ds.npz", *TINY, "--out", "runs/p", "--export", "weights/priv-32",
                           "--model-id", "priv-32"]) == 0
        assert audit_main(["weights/priv-32", "--data", "data/ds.npz", "--spaces", "pixel", "--num", "64",
                           "--bootstrap", "100"]) == 0
    return root


def test_ingestion_pseudonymises_and_keeps_the_mapping_local(work, capsys):
    ds = D.SliceDataset.load(work / "data" / "ds.npz")
    assert all(is_pseudonym(s) and s.startswith("subj-") for s in ds.subject.tolist())
    assert all(is_pseudonym(s) and s.startswith("file-") and s.endswith(".dcm") for s in ds.source.tolist())
    assert len(set(ds.subject.tolist())) == 3 and len(set(ds.source.tolist())) == 18
    assert ds.meta["public"] is False and ds.meta["pseudonymised"] is True
    assert ds.meta["pseudonyms"]["keys_file"] == "ds.keys.json"
    assert not leaks((work / "data" / "ds.npz").read_bytes())
    assert not leaks(json.dumps(ds.meta).encode())
    keys = json.loads((work / "data" / "ds.keys.json").read_text())
    assert keys["key"] not in json.dumps(ds.meta)  # the key stays out of the dataset
    assert sorted(keys["subjects"].values()) == [p[0] for p in PATIENTS]
    assert set(keys["subjects"]) == set(ds.subject.tolist()) and set(keys["files"]) == set(ds.source.tolist())
    assert all(v.startswith(f"scans/{FOLDER}/") for v in keys["files"].values())
    names = {v["PatientName"] for v in keys["identifiers"].values()}
    assert names == {p[1] for p in PATIENTS} and "PRIVATE" in keys["warning"]


def test_model_folder_and_upload_carry_no_identifiers(work, capsys):
    folder = work / "weights" / "priv-32"
    write_card(folder)  # the card as training.publish.card renders it
    config = json.loads((folder / "config.json").read_text())
    assert config["training_data"]["sources"] and all(
        is_pseudonym(s["id"]) and is_pseudonym(s["subject"]) for s in config["training_data"]["sources"])
    for path in folder.iterdir():
        assert not leaks(path.read_bytes()), path.name
        if path.suffix == ".png":
            assert not leaks(png_text(path).encode()), path.name
    with contextlib.chdir(work):  # the keys file is found through the run folder config.json names (runs/p)
        assert push_mod.main([str(folder), "--repo", REPO, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "dry run: nothing uploaded" in out and "no pseudonym keys file found" not in err
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(HF_TOKEN="hf_test_token", HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(ROOT))
    with fake_hub() as hub:
        proc = subprocess.run([sys.executable, "-m", "training.push", "weights/priv-32", "--repo", REPO, "--endpoint",
                               hub.url], cwd=work, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
    uploaded = hub.files(REPO)
    assert {"config.json", "README.md", "model.safetensors", "samples.png"} <= set(uploaded)
    for name, blob in uploaded.items():
        assert not leaks(blob), name


@pytest.fixture
def folder_copy(work, tmp_path) -> Path:
    return Path(shutil.copytree(work / "weights" / "priv-32", tmp_path / "priv-32"))


def _refusal(folder: Path, **kw) -> str:
    with pytest.raises(push_mod.PushError) as err:
        push_mod.validate_folder(folder, keys_file=kw.pop("keys_file", None), **kw)
    return str(err.value)


def test_push_refuses_planted_identifiers_naming_file_and_field(work, folder_copy, capsys):
    config = json.loads((folder_copy / "config.json").read_text())
    config["training_data"]["PatientID"] = "PID-424242"
    (folder_copy / "config.json").write_text(json.dumps(config))
    msg = _refusal(folder_copy)
    assert "config.json: field training_data.PatientID is a patient identifier field" in msg
    assert "PID-424242" not in msg  # the identifier is named by its field, not echoed
    # the same value where no field name gives it away: found from the dataset's keys file
    config["training_data"].pop("PatientID")
    config["description"] = "Scans of PID-424242, born 19700101"
    config["training_data"]["sources"][0]["id"] = f"{FOLDER}/x.dcm"
    (folder_copy / "config.json").write_text(json.dumps(config))
    keys = work / "data" / "ds.keys.json"
    msg = _refusal(folder_copy, keys_file=keys)
    assert "config.json: field description contains the PatientID 'PI…'" in msg and "ds.keys.json" in msg
    assert "config.json: field description contains the PatientBirthDate" in msg
    assert "field training_data.sources[0].id is an original file path" in msg
    assert push_mod.main([str(folder_copy), "--repo", REPO, "--dry-run", "--keys", str(keys)]) == 2
    assert "cannot be published" in capsys.readouterr().err
    # a DICOM person name in the card, even without the keys file
    shutil.rmtree(folder_copy)
    shutil.copytree(work / "weights" / "priv-32", folder_copy)
    readme = folder_copy / "README.md"
    readme.write_text(readme.read_text() + "\nAcquired for DOE^JANE.\n")
    assert "README.md: line" in _refusal(folder_copy) and "DICOM person name" in _refusal(folder_copy)


def test_push_refuses_real_images_of_a_non_public_dataset_unless_allowed(work, folder_copy, capsys):
    from card_fixtures import fake_eval_report

    from training.evaluation.evaluate import update_model_folder
    from training.evaluation.model_folder import write_json

    report = fake_eval_report("priv-32")  # evaluate's schema; evaluated on this (non-public) dataset
    report["real_data"]["dataset"] = "custom"
    write_json(folder_copy / "eval.json", report)
    Image.fromarray(np.full((40, 80), 128, np.uint8)).save(folder_copy / "eval.png")  # not marked synthetic
    update_model_folder(folder_copy, report, "python -m training.evaluate weights/priv-32 --data data/ds.npz")
    card = (folder_copy / "README.md").read_text()
    assert "](eval.png)" in card and privacy.REAL_IMAGES_NOTE in card  # the card says what eval.png shows
    msg = _refusal(folder_copy)
    assert "eval.png: shows REAL slices of the training data ('custom', not marked public" in msg
    assert "--allow-real-images" in msg and "rm FOLDER/eval.png" in msg
    assert "eval.png" in push_mod.validate_folder(folder_copy, allow_real_images=True)
    assert "warning: eval.png: shows REAL slices" in capsys.readouterr().err
    assert push_mod.main([str(folder_copy), "--repo", REPO, "--dry-run", "--allow-real-images"]) == 0
    out, err = capsys.readouterr()
    assert "eval.png" in out and "publishing them because --allow-real-images was given" in err
    # removing the figure and re-rendering the card is the other way out
    (folder_copy / "eval.png").unlink()
    write_card(folder_copy)
    assert "eval.png" not in (folder_copy / "README.md").read_text()
    push_mod.validate_folder(folder_copy)
    # identifiers stay refused even with the flag
    config = json.loads((folder_copy / "config.json").read_text())
    config["training_data"]["PatientName"] = "x"
    (folder_copy / "config.json").write_text(json.dumps(config))
    assert "patient identifier field" in _refusal(folder_copy, allow_real_images=True)


def test_builtin_datasets_keep_public_names(tmp_path, monkeypatch):
    import nibabel as nib

    vol = np.zeros((20, 20, 12), np.float32)
    vol[4:16, 4:16, 2:10] = 100
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "atlas.nii.gz")
    spec = {"description": "a public test volume", "window": None, "licence": "CC0-1.0",
            "sources": [(str(tmp_path), "atlas.nii.gz", "Public-Atlas", "CC0-1.0", "none")]}
    monkeypatch.setitem(D.BUILTIN_DATASETS, "tiny-public", spec)
    ds = D.build_builtin("tiny-public", 16, progress=False)
    assert ds.meta["public"] is True and not ds.needs_pseudonyms
    ds.save(tmp_path / "out" / "pub.npz")
    back = D.SliceDataset.load(tmp_path / "out" / "pub.npz")
    assert set(back.subject.tolist()) == {"Public-Atlas"} and set(back.source.tolist()) == {"atlas.nii.gz"}
    assert not (tmp_path / "out" / "pub.keys.json").exists()
    assert privacy.dataset_public({"name": "brain-t1"}) and privacy.dataset_public({"name": "x", "public": True})
    assert not privacy.dataset_public({"name": "custom"})
    assert not privacy.dataset_public({"name": "brain-t1", "public": False})


def test_same_key_same_pseudonyms(work, tmp_path, capsys):
    first = D.SliceDataset.load(work / "data" / "ds.npz")
    raw = D.ingest([work / "scans"], 32, progress=False)  # in memory: the originals, for inspection only
    assert set(raw.subject.tolist()) == {p[0] for p in PATIENTS}
    with contextlib.chdir(work):  # re-ingest to the same name, and to another dataset in the same folder: same key
        assert data_cli.main(["scans", "--size", "32", "--out", "data/ds.npz", "--quiet"]) == 0
        assert data_cli.main(["scans", "--size", "32", "--out", "data/other.npz", "--quiet"]) == 0
    again, other = (D.SliceDataset.load(work / "data" / n) for n in ("ds.npz", "other.npz"))
    assert again.subject.tolist() == first.subject.tolist() and again.source.tolist() == first.source.tolist()
    assert other.subject.tolist() == first.subject.tolist()
    assert Keys.open(keys_path(work / "data" / "other.npz")).key == Keys.open(work / "data" / "ds.keys.json").key
    # a new folder gets a new key (different pseudonyms) unless --key-file reuses one
    fresh = raw.save(tmp_path / "fresh" / "ds.npz")
    assert set(D.SliceDataset.load(fresh).subject.tolist()).isdisjoint(first.subject.tolist())
    with contextlib.chdir(work):
        assert data_cli.main(["scans", "--size", "32", "--out", str(tmp_path / "reuse" / "ds.npz"), "--quiet",
                       "--key-file", "data/ds.keys.json"]) == 0
    assert D.SliceDataset.load(tmp_path / "reuse" / "ds.npz").subject.tolist() == first.subject.tolist()
    assert "keep that file private" in capsys.readouterr().out
    # training or evaluating on the folder directly: pseudonymised in memory too, keys in the cache
    direct = D.load_dataset(str(work / "scans"), 32)
    assert all(is_pseudonym(s) for s in direct.subject.tolist()) and D.keys_for(work / "scans").is_file()


# --- issue 31: a dataset whose path names a patient never reaches the weights -------------------------------------
MRN_FOLDER, MRN_FILE = "Doe_Jane_MRN123456", "JaneDoe_MRN123456.npz"
MRN_SECRETS = [b"janedoe", b"doe_jane", b"mrn123456"]


def mrn_leaks(folder: Path) -> dict[str, list[bytes]]:
    """Every file of `folder` (weights and the local discriminator included) whose bytes hold a secret, any case."""
    found = {p.name: [s for s in MRN_SECRETS if s in p.read_bytes().lower()] for p in folder.iterdir()}
    return {name: hits for name, hits in found.items() if hits}


def plant_metadata(weights: Path, recorded: dict) -> None:
    """Rewrite model.safetensors with `recorded` as its medgan_config metadata (what training wrote before it
    recorded datasets by name): same tensors, so only the metadata can be refused."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file(tensors, weights, metadata={"format": "pt", "medgan_config": json.dumps(recorded)})


def test_keys_saved_between_shards_go_to_a_journal_that_the_full_save_folds_in(tmp_path):
    """save_new appends only the names given since the last save; open replays them (a last line cut off by a kill
    is ignored); save writes the whole file and removes the journal."""
    keys = Keys.open(tmp_path / "d.keys.json")
    first = keys.file("scans/a/1.dcm")
    keys.save_new()  # no file yet: written whole
    assert not journal_path(keys.path).exists()
    size = keys.path.stat().st_size
    names = [keys.file(f"scans/b/{i}.dcm") for i in range(3)] + [keys.subject("PATIENT-B")]
    keys.note_identifiers(names[-1], {"PatientName": "DOE^JANE"})
    keys.save_new()
    keys.save_new()  # nothing new: nothing appended
    journal = journal_path(keys.path)
    assert keys.path.stat().st_size == size and len(journal.read_text().splitlines()) == 1
    assert oct(journal.stat().st_mode & 0o777) == "0o600"
    with journal.open("a") as fh:
        fh.write('[["files","file-0123456789ab.dcm","scans/c/cut')  # a kill mid-line
    again = Keys.open(keys.path)
    assert again.files == keys.files and again.subjects == keys.subjects and again.identifiers == keys.identifiers
    assert again.file("scans/b/2.dcm") == names[2] and again.file("scans/a/1.dcm") == first
    again.save()
    assert not journal.exists() and Keys.open(keys.path).files == keys.files


def test_dataset_path_naming_a_patient_stays_out_of_every_file_weights_included(tmp_path, capsys):
    """Ingest into `Doe_Jane_MRN123456/JaneDoe_MRN123456.npz`, train 2 steps with the default run folder: no file of
    the model folder holds the name or the MRN, byte by byte. Planting the path where training used to record it
    (the weights' metadata, config.json untouched) makes push refuse, naming model.safetensors and the field,
    through the keys found via the run folder and, without them, by the MRN pattern. Re-exporting with
    `--resume` (the fix the refusal names) leaves the folder clean again."""
    from training.gan.cli import main as train_main

    make_dicoms(tmp_path / "scans")
    data = f"{MRN_FOLDER}/{MRN_FILE}"
    with contextlib.chdir(tmp_path):
        assert data_cli.main(["scans", "--size", "32", "--out", data, "--quiet"]) == 0
        assert train_main(["--data", data, *TINY, "--export", "weights/priv-mrn", "--model-id", "priv-mrn"]) == 0
    folder = tmp_path / "weights" / "priv-mrn"
    assert (folder / "discriminator.safetensors").is_file() and mrn_leaks(folder) == {}
    config = json.loads((folder / "config.json").read_text())
    recorded = config["training"]["config"]
    assert recorded["data"] == f"dataset-{config['training_data']['sha256'][:12]}"
    assert recorded["data"] == D.recorded_name(D.load_dataset(str(tmp_path / data), 32), data)  # evaluate's name too
    assert f"--data {recorded['data']}" in config["training"]["command"] and recorded["out"] == "runs/priv-mrn-small-data-32"
    assert privacy.safetensors_metadata(folder / "model.safetensors")["medgan_config"]["training"] == config["training"]
    with contextlib.chdir(tmp_path):
        assert push_mod.main([str(folder), "--repo", REPO, "--dry-run", "--accept-privacy-risk"]) == 0  # no audit here
    assert "no pseudonym keys file found" not in capsys.readouterr().err  # keys found through runs/priv-mrn-…

    before = json.loads(json.dumps(config))
    config["training"]["command"] = config["training"]["command"].replace(f"--data {recorded['data']}", f"--data {data}")
    config["training"]["config"]["data"] = data
    plant_metadata(folder / "model.safetensors", config)
    assert json.loads((folder / "config.json").read_text()) == before  # config.json still clean
    with contextlib.chdir(tmp_path):
        assert push_mod.main([str(folder), "--repo", REPO, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert ("model.safetensors: field metadata.medgan_config.training.command, metadata.medgan_config.training.config"
            ".data contains the file path 'Do…' of the dataset (the local path training read it from)") in err
    assert "contains the part of a PatientName 'JA…' of the dataset (listed in" in err and "--resume RUN_FOLDER" in err
    assert "config.json:" not in err and f"--data {data}" not in err  # the file and field named, the value masked
    elsewhere = tmp_path / "elsewhere"  # no run folder, no keys: the record number is still caught by its pattern
    elsewhere.mkdir()
    with contextlib.chdir(elsewhere):
        assert push_mod.main([str(folder), "--repo", REPO, "--dry-run"]) == 2
    assert "model.safetensors: field metadata.medgan_config.training.command holds a medical record number" in \
        capsys.readouterr().err

    with contextlib.chdir(tmp_path):  # the fix: re-export the run (no further steps)
        assert train_main(["--resume", "runs/priv-mrn-small-data-32"]) == 0
        assert push_mod.main([str(folder), "--repo", REPO, "--dry-run", "--accept-privacy-risk"]) == 0
    assert mrn_leaks(folder) == {}
