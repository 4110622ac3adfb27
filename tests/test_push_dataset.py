"""Publishing a parquet dataset: `training.push --dataset DIR --repo ORG/NAME` checks it (every row synthetic, a
valid card naming the files' features, nothing of a non-public training set), lists it on --dry-run, and uploads
it as a dataset repo to the fake Hub on 127.0.0.1."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_hub import fake_hub
from helpers import ROOT, make_model_folder, run_push

from medgan.config import ModelConfig
from medgan.dataset import export_dataset
from training.publish import push as push_mod
from training.publish.dataset import validate_dataset_folder

SHIPPED = ROOT / "weights" / "brain-t1-style-64"
REPO = "medgan-test/brain-t1-synthetic"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push-dataset") / "brain-t1-synthetic"
    export_dataset(str(SHIPPED), 64, out, "parquet", seed=3, shard_size=40, progress=False)
    return out


def copy(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / dataset.name))


def problems(folder: Path, **kwargs) -> str:
    with pytest.raises(push_mod.PushError) as err:
        validate_dataset_folder(folder, **kwargs)
    return str(err.value)


def test_dry_run_passes_and_lists_the_files(dataset, capsys):
    assert push_mod.main(["--dataset", str(dataset), "--repo", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("README.md", "dataset.json", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"):
        assert f"{name} " in out and f"{(dataset / name).stat().st_size:,d} bytes" in out
    assert "in 4 files" in out and "dry run: nothing uploaded" in out


def test_a_row_not_marked_synthetic_is_refused(dataset, tmp_path, capsys):
    bad = copy(dataset, tmp_path)
    shard = bad / "data" / "train-00001-of-00002.parquet"
    table = pq.read_table(shard)
    flags = table.column("synthetic").to_pylist()
    flags[3] = False
    table = table.set_column(table.schema.get_field_index("synthetic"), "synthetic", pa.array(flags))
    pq.write_table(table, shard)
    assert "data/train-00001-of-00002.parquet: 1 row(s) not marked synthetic (rows [3])" in problems(bad)
    assert push_mod.main(["--dataset", str(bad), "--repo", REPO, "--dry-run"]) == 2
    assert "not marked synthetic" in capsys.readouterr().err


def test_the_card_must_be_present_valid_and_match_the_files(dataset, tmp_path):
    bad = copy(dataset, tmp_path)
    card = (bad / "README.md").read_text()
    (bad / "README.md").write_text(card.replace("num_examples: 64", "num_examples: 65")
                                   .replace("**Not for diagnosis.**", "").replace("name: seed", "name: seeds"))
    (bad / "notes.txt").write_text("scratch")
    found = problems(bad)
    assert "README.md: num_examples 65 is not the 64 rows" in found
    assert "README.md: does not say that the images are not for diagnosis" in found
    assert "README.md: the card names the features" in found and "'seeds'" in found
    assert "notes.txt: not a file of a parquet dataset" in found
    (bad / "README.md").unlink()
    (bad / "data" / "train-00000-of-00002.parquet").unlink()
    found = problems(bad)
    assert "README.md is missing" in found
    assert "data/train-00000-of-00002.parquet is missing: the export is incomplete" in found


def test_the_model_must_be_the_one_that_generated_it(dataset, tmp_path):
    other = make_model_folder(tmp_path / "weights", "brain-t1-style-64")
    assert "its weights are revision sha256:" in problems(dataset, model=other)
    moved = copy(dataset, tmp_path)
    info = json.loads((moved / "dataset.json").read_text())
    (moved / "dataset.json").write_text(json.dumps({**info, "model": "gone"}))
    assert "cannot find the model 'gone'" in problems(moved)


def test_nothing_of_a_non_public_training_set_reaches_the_card(tmp_path):
    model = make_model_folder(tmp_path / "weights", "private-test")
    config = ModelConfig.load(model)
    config.training_data = {"name": "clinic-t1", "public": False, "licences": ["internal use"],
                            "sources": [{"id": "file-3f9a1c", "subject": "subj-7d2e41", "slices": 20}]}
    config.save(model)
    out = tmp_path / "private-synthetic"
    export_dataset(str(model), 6, out, "parquet", shard_size=6, progress=False)
    card = (out / "README.md").read_text()
    assert "subj-7d2e41" not in card and "1 source volume(s), not listed" in card
    assert validate_dataset_folder(out, model=model)  # the card as written passes
    (out / "README.md").write_text(card + "\nSlices of subj-7d2e41 from /data/clinic/scans.\n")
    found = problems(out, model=model)
    assert "README.md: names the training data's subject 'su…' (the training data is not public)" in found
    assert "README.md: line" in found and "holds an absolute file path" in found


@pytest.mark.slow  # the CLI in a subprocess
def test_push_uploads_a_dataset_repo_to_the_fake_hub(dataset):
    with fake_hub() as hub:
        result = run_push("--dataset", str(dataset), "--repo", REPO, "--private", "--endpoint", hub.url)
        assert result.returncode == 0, result.stderr
    create = next(r for r in hub.requests if r["path"] == "/api/repos/create")["body"]
    assert (create["type"], create["name"], create["visibility"]) == ("dataset", "brain-t1-synthetic", "private")
    assert len(hub.commits) == 1 and hub.commits[0].repo_type == "datasets"
    uploaded = hub.files(REPO, "datasets")
    assert sorted(uploaded) == ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                                "dataset.json"]
    assert all(uploaded[name] == (dataset / name).read_bytes() for name in uploaded)
    assert f"commit: {hub.url}/datasets/{REPO}/commit/{hub.commits[0].oid}" in result.stdout
