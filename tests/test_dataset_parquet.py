"""Parquet datasets (`python -m medgan.dataset … --format parquet`): a shipped conditional model's 64 images load
with `datasets` (Image + ClassLabel), equal Generator.generate pixel for pixel, regenerate byte for byte, resume
by shard and by rank; the card's YAML parses and names the features; pyarrow alone writes them."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from helpers import ROOT, make_model_folder
from medgan import Generator
from medgan.dataset import DATA_CARD, ParquetDataset, export_dataset, main

SHIPPED = ROOT / "weights" / "brain-t1-style-64"  # conditional on the slice level (5 classes)
COUNT, SEED = 64, 3


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden temp files included), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def shipped_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("parquet") / "brain-t1-synthetic"
    assert main([str(SHIPPED), "--count", str(COUNT), "--out", str(out), "--format", "parquet", "--seed", str(SEED),
                 "--shard-size", "40", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def shipped_gen() -> Generator:
    return Generator.from_folder(SHIPPED)


def test_layout_is_a_dataset_repo(shipped_dataset):
    assert sorted(tree(shipped_dataset)) == ["README.md", "data/train-00000-of-00002.parquet",
                                             "data/train-00001-of-00002.parquet", "dataset.json"]
    info = json.loads((shipped_dataset / "dataset.json").read_text())
    assert info["synthetic"] is True and info["format"] == "parquet" and "created_utc" not in info


def test_load_dataset_gives_64_rows_with_image_and_classlabel(shipped_dataset, shipped_gen, tmp_path):
    for kwargs in ({"path": str(shipped_dataset)}, {"path": "parquet", "data_dir": str(shipped_dataset)}):
        ds = datasets.load_dataset(**kwargs, split="train", cache_dir=str(tmp_path / "cache"))
        assert len(ds) == COUNT, kwargs
        assert isinstance(ds.features["image"], datasets.Image)
        assert isinstance(ds.features["label"], datasets.ClassLabel)
        assert ds.features["label"].names == shipped_gen.classes
    expected = shipped_gen.generate(count=COUNT, seed=SEED, output_type="np")
    assert np.array_equal(np.stack([np.asarray(im) for im in ds["image"]]), expected)  # pixel for pixel
    assert ds["label"] == shipped_gen.labels(COUNT, SEED).tolist()
    assert ds["index"] == list(range(COUNT)) and set(ds["seed"]) == {SEED} and set(ds["truncation"]) == {1.0}
    assert all(ds["synthetic"]) and set(ds["model_id"]) == {"brain-t1-style-64"}
    revision = json.loads((shipped_dataset / "dataset.json").read_text())["revision"]
    assert set(ds["model_revision"]) == {revision} and len(revision) == len("sha256:") + 64
    assert ds[5]["image"].text["Synthetic"] == "true" and ds[5]["image"].text["Index"] == "5"
    assert ds[5]["image"].text["Class"] == shipped_gen.classes[ds[5]["label"]]


def test_a_second_run_writes_identical_bytes(shipped_dataset, tmp_path):
    again = tmp_path / shipped_dataset.name  # same folder name: the card's command names it
    assert main([str(SHIPPED), "--count", str(COUNT), "--out", str(again), "--format", "parquet", "--seed",
                 str(SEED), "--shard-size", "40", "--quiet"]) == 0
    assert tree(again) == tree(shipped_dataset)


def test_card_yaml_parses_and_names_the_features(shipped_dataset, shipped_gen):
    text = (shipped_dataset / DATA_CARD).read_text()
    meta = front_matter(text)
    assert meta["license"] == "mit" and meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["image-classification", "unconditional-image-generation"]
    assert {"synthetic", "medical-imaging", "mri", "brain"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    feats = {f["name"]: f["dtype"] for f in meta["dataset_info"]["features"]}
    assert list(feats) == ["image", "label", "seed", "index", "truncation", "model_id", "model_revision", "synthetic"]
    assert feats["image"] == "image"
    assert feats["label"] == {"class_label": {"names": {str(i): c for i, c in enumerate(shipped_gen.classes)}}}
    assert meta["dataset_info"]["splits"][0]["num_examples"] == COUNT
    from huggingface_hub import DatasetCard
    card = DatasetCard.load(shipped_dataset / DATA_CARD)  # the Hub client's own parse
    assert card.data.license == "mit" and card.data.dataset_info["features"][1]["name"] == "label"
    body = text.split("---\n", 2)[2]
    for needed in ("**Not for diagnosis.**", "python -m medgan.dataset brain-t1-style-64 --count 64 --out "
                   "brain-t1-synthetic --format parquet --seed 3 --shard-size 40", "FID", "real-vs-real floor",
                   "TSTR", "TRTR", "Licence(s) of the training data", "## Intended uses and limits", "load_dataset",
                   "weights/brain-t1-style-64/README.md"):
        assert needed in body, needed
    evaluation = json.loads((SHIPPED / "eval.json").read_text())
    assert f"{evaluation['fid']:.4g}" in body and f"{evaluation['floor']['fid']:.4g}" in body


def test_parquet_dataset_feeds_a_dataloader_without_datasets(shipped_dataset, shipped_gen):
    ds = ParquetDataset(shipped_dataset)
    assert len(ds) == COUNT and ds.classes == shipped_gen.classes
    batches = list(DataLoader(ds, batch_size=16, num_workers=2))
    images = torch.cat([b["image"] for b in batches])
    expected = torch.from_numpy(shipped_gen.generate(count=COUNT, seed=SEED, output_type="np")).float() / 127.5 - 1
    assert images.shape == (COUNT, 1, 64, 64) and torch.equal(images[:, 0], expected)
    assert torch.cat([b["label"] for b in batches]).tolist() == shipped_gen.labels(COUNT, SEED).tolist()
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(COUNT))


def test_truncation_and_a_fixed_class_steer_every_row(shipped_gen, tmp_path):
    export_dataset(str(SHIPPED), 10, tmp_path, "parquet", seed=5, truncation=0.7, image_class="upper",
                   shard_size=10, progress=False)
    table = pq.read_table(next((tmp_path / "data").glob("*.parquet")))
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b["bytes"]))) for b in table.column("image").to_pylist()])
    assert np.array_equal(pixels, shipped_gen.generate(10, 5, truncation=0.7, label="upper", output_type="np"))
    assert set(table.column("label").to_pylist()) == {shipped_gen.classes.index("upper")}
    assert set(table.column("truncation").to_pylist()) == {0.7}
    assert "--truncation 0.7 --class upper" in (tmp_path / DATA_CARD).read_text()


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_model_folder(tmp_path / "weights", "tiny-test")  # unconditional DCGAN, 32²


def export(model, out, **kw):
    return export_dataset(str(model), kw.pop("count", 10), out, "parquet", shard_size=kw.pop("shard_size", 4),
                          seed=7, progress=False, **kw)


def test_an_interrupted_export_resumes_by_shard_to_the_same_bytes(tiny, tmp_path):
    whole, resumed = tmp_path / "a" / "ds", tmp_path / "b" / "ds"
    export(tiny, whole)
    export(tiny, resumed)
    victim = resumed / "data" / "train-00001-of-00003.parquet"
    victim.write_bytes(victim.read_bytes()[:500])                          # cut off mid-file
    (resumed / "data" / ".train-00002-of-00003.parquet.tmp-9-abcdef.parquet").write_bytes(b"partial")
    (resumed / DATA_CARD).unlink()
    before = (resumed / "data" / "train-00000-of-00003.parquet").stat().st_mtime_ns
    summary = export(tiny, resumed)
    assert (summary.skipped_shards, summary.written_shards, summary.manifest) == (2, 1, True)
    assert (resumed / "data" / "train-00000-of-00003.parquet").stat().st_mtime_ns == before  # not rewritten
    assert tree(resumed) == tree(whole)


def test_ranks_write_their_own_shards_and_the_last_writes_the_card(tiny, tmp_path):
    one, ranks = tmp_path / "one" / "ds", tmp_path / "ranks" / "ds"
    export(tiny, one)
    first = export(tiny, ranks, rank=0, world_size=2)
    assert sorted(p.name for p in (ranks / "data").iterdir()) == ["train-00000-of-00003.parquet",
                                                                  "train-00002-of-00003.parquet"]
    assert not first.manifest and not (ranks / DATA_CARD).exists()
    os.environ.update(RANK="1", WORLD_SIZE="2")  # as torchrun sets them
    try:
        second = export(tiny, ranks)
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]
    assert second.written_shards == 1 and second.manifest and tree(ranks) == tree(one)


def test_an_unconditional_model_has_no_label_column(tiny, tmp_path):
    export(tiny, tmp_path / "ds")
    meta = front_matter((tmp_path / "ds" / DATA_CARD).read_text())
    assert meta["task_categories"] == ["unconditional-image-generation"]
    assert "label" not in [f["name"] for f in meta["dataset_info"]["features"]]
    assert "label" not in pq.read_schema(next((tmp_path / "ds" / "data").glob("*.parquet"))).names
    item = ParquetDataset(tmp_path / "ds")[3]
    assert set(item) == {"image", "index"} and item["index"] == 3


def test_bad_steering_is_refused_clearly(tiny, tmp_path, capsys):
    for argv, message in ((["--class", "upper"], "model 'tiny-test' is unconditional"),
                          (["--truncation", "3"], "truncation must be between 0 and 2")):
        with pytest.raises(SystemExit) as exit_:
            main([str(tiny), "--count", "2", "--out", str(tmp_path / "x"), "--format", "parquet", *argv])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main([str(SHIPPED), "--count", "2", "--out", str(tmp_path / "y"), "--format", "parquet", "--class", "top"])
    assert "unknown class 'top'" in capsys.readouterr().err


@pytest.mark.slow  # a CLI in a subprocess
def test_pyarrow_alone_writes_the_dataset(tiny, tmp_path):
    """Generation must not need the `datasets` package: the CLI runs with it made unimportable."""
    code = ("import sys; sys.modules['datasets'] = None; from medgan.dataset import main; "
            f"sys.exit(main([{str(tiny)!r}, '--count', '5', '--out', {str(tmp_path / 'ds')!r}, '--format', "
            "'parquet', '--quiet']))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(ParquetDataset(tmp_path / "ds")) == 5 and (tmp_path / "ds" / DATA_CARD).is_file()


def test_shuffled_reads_go_by_row_group(tiny, tmp_path, monkeypatch):
    export(tiny, tmp_path / "ds", count=250, shard_size=250)  # one file, row groups of 100, 100 and 50 rows
    monkeypatch.setattr(ParquetDataset, "CACHED_GROUPS", 1)  # every switch of group reads again
    data = ParquetDataset(tmp_path / "ds")
    assert {group for _, group, _ in data.rows} == {0, 1, 2}
    expected = Generator.from_folder(tiny).generate(250, 7, output_type="np")
    batches = list(DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    order = torch.cat([b["index"] for b in batches])
    images = torch.cat([b["image"] for b in batches])[:, 0]
    assert sorted(order.tolist()) == list(range(250)) and order.tolist() != list(range(250))
    assert torch.equal(images, torch.from_numpy(expected[order.numpy()]).float() / 127.5 - 1)
