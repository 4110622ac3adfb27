"""Dataset export: sharding, resume (byte for byte), workers, ranks, CLI errors; the two torch Datasets."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import ROOT, make_model_folder
from medgan import Generator, MedganError
from medgan.dataset import ExportedDataset, SyntheticDataset, export_dataset, main, shard_complete
from medgan.export import ExportError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("weights"), "tiny-test")  # 32², base width 8


def files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (dataset.json without its creation time)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "dataset.json":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "created_utc"}).encode()
            out[str(path.relative_to(folder))] = data
    return out


def export(model, out, fmt="png", count=10, **kw):
    return export_dataset(str(model), count, out, fmt, shard_size=kw.pop("shard_size", 5), seed=7,
                          progress=False, **kw)


@pytest.mark.parametrize("fmt", ["npz", "dicom"])
def test_interrupted_export_resumes_to_the_same_bytes(model, tmp_path, fmt):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    export(model, whole, fmt)
    export(model, resumed, fmt)
    # Simulate an interruption in shard 1: truncated file, no marker, a temp folder, no manifest.
    shard = resumed / "shard-00001"
    victim = next(p for p in shard.iterdir() if p.name != "shard.json")
    victim.write_bytes(victim.read_bytes()[:100])
    (shard / "shard.json").unlink()
    (resumed / ".shard-00001.tmp-999-abcdef").mkdir()
    (resumed / "manifest.csv").unlink()
    assert shard_complete(resumed, 0) and not shard_complete(resumed, 1)
    before = (resumed / "shard-00000" / "shard.json").stat().st_mtime_ns
    summary = export(model, resumed, fmt)
    assert (summary.skipped_shards, summary.written_shards, summary.manifest) == (1, 1, True)
    assert (resumed / "shard-00000" / "shard.json").stat().st_mtime_ns == before  # not rewritten
    assert files(resumed) == files(whole)  # DICOM UIDs derive from (model, revision, seed, label, index)
    rows = (whole / "manifest.csv").read_text().splitlines()
    assert rows[0] == "index,seed,file,item,shard" and len(rows) == 11 and rows[7].startswith("6,7,shard-00001/")


@pytest.mark.slow
def test_killed_cli_resumes_to_the_same_bytes_as_an_uninterrupted_run(model, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = [str(model), "--count", "600", "--shard-size", "200", "--seed", "7", "--batch-size", "50", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medgan.dataset", *args, "--out", str(killed)], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 60
        while not (killed / "shard-00000" / "shard.json").exists() and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert not (killed / "manifest.csv").exists()  # it was killed before the end
    assert main([*args, "--out", str(killed)]) == 0
    assert main([*args, "--out", str(whole)]) == 0
    assert files(killed) == files(whole) and len([p for p in files(whole) if p.endswith(".png")]) == 600


@pytest.mark.slow
def test_two_workers_and_two_ranks_write_the_same_dataset(model, tmp_path):
    one = tmp_path / "one"
    export(model, one, count=12, shard_size=3)
    two = tmp_path / "two"
    summary = export(model, two, count=12, shard_size=3, workers=2)
    assert summary.written_shards == 4 and files(two) == files(one)
    ranks = tmp_path / "ranks"
    first = export(model, ranks, count=12, shard_size=3, rank=0, world_size=2)
    assert sorted(p.name for p in ranks.glob("shard-*")) == ["shard-00000", "shard-00002"] and not first.manifest
    os.environ.update(RANK="1", WORLD_SIZE="2")
    try:
        second = export(model, ranks, count=12, shard_size=3)  # rank from the environment, as under torchrun
    finally:
        del os.environ["RANK"], os.environ["WORLD_SIZE"]
    assert second.written_shards == 2 and second.manifest and files(ranks) == files(one)


def test_dataset_json_readme_and_png_provenance(model, tmp_path):
    export(model, tmp_path, count=3, shard_size=2, label=True)
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["synthetic"] is True and info["model"] == "tiny-test" and info["revision"].startswith("sha256:")
    assert (info["seed"], info["count"], info["format"], info["shards"], info["label"]) == (7, 3, "png", 2, True)
    assert "SYNTHETIC" in (tmp_path / "README.txt").read_text()
    from PIL import Image
    text = Image.open(next(tmp_path.glob("shard-00001/*.png"))).text
    assert text["Synthetic"] == "true" and text["Index"] == "2" and "CreationTime" not in text


def test_cli_errors_exit_2_without_traceback(model, tmp_path, capsys):
    for bad in (["--count", "0"], ["--count", "x"], ["--count", "5", "--shard-size", "0"],
                ["--count", "5", "--format", "bmp"], ["--count", "5", "--workers", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main([str(model), "--out", str(tmp_path / "x"), *bad])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err and "error:" in err
    assert "count must be between 1" in _err(main, [str(model), "--out", str(tmp_path), "--count", "0"], capsys)
    assert "choose from 'png', 'npz', 'dicom', 'nifti'" in _err(
        main, [str(model), "--out", str(tmp_path), "--count", "2", "--format", "bmp"], capsys)
    assert "Unknown model id 'nope'" in _err(main, ["nope", "--out", str(tmp_path / "y"), "--count", "2"], capsys)
    assert main([str(model), "--out", str(tmp_path / "d"), "--count", "2", "--quiet"]) == 0
    assert "holds a different dataset (seed: 0 there, 3 now)" in _err(
        main, [str(model), "--out", str(tmp_path / "d"), "--count", "2", "--seed", "3"], capsys)


def _err(fn, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        fn(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_write_error_is_clear_and_leaves_no_partial_shard(model, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(ExportError, match="could not write shard-00000: disk full") as err:
        export(model, tmp_path, count=4, shard_size=2)
    assert isinstance(err.value, MedganError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.txt", "dataset.json"]


def test_synthetic_dataset_equals_the_generator(model):
    gen = Generator.from_folder(model)
    batch = gen.generate(count=6, seed=7, output_type="pt")
    for source in (str(model), gen):
        ds = SyntheticDataset(source, length=6, seed=7)
        assert len(ds) == 6
        for i in (0, 3, 5):
            assert torch.equal(ds[i], gen.generate(count=1, seed=7, start=i, output_type="pt")[0])
        assert ds[0].shape == (1, 32, 32) and ds[0].dtype == torch.float32 and -1 <= ds[0].min() <= ds[0].max() <= 1
        loaded = torch.cat(list(DataLoader(ds, batch_size=2, num_workers=2)))
        assert torch.allclose(loaded, batch, atol=1e-5)
    with pytest.raises(IndexError):
        SyntheticDataset(gen, length=6, seed=7)[6]


@pytest.mark.parametrize("fmt", ["png", "npz", "dicom", "nifti"])
def test_exported_dataset_reads_every_format_in_manifest_order(model, tmp_path, fmt):
    export(model, tmp_path, fmt, count=5, shard_size=2)
    ds = ExportedDataset(tmp_path)
    gen = Generator.from_folder(model)
    expected = torch.from_numpy(gen.generate(count=5, seed=7, output_type="np")).float().div(127.5).sub(1)
    assert len(ds) == 5 and [r["index"] for r in ds.rows] == list(range(5))
    loaded = torch.cat(list(DataLoader(ds, batch_size=2, num_workers=2)))
    assert torch.equal(loaded[:, 0], expected)
    if fmt == "dicom":
        first = pydicom.dcmread(tmp_path / ds.rows[0]["file"])
        assert first.PatientName == "SYNTHETIC^MEDGAN" and first.ContentDate == ""  # no time: reproducible


def test_exported_dataset_refuses_an_incomplete_folder(model, tmp_path):
    export(model, tmp_path, count=4, shard_size=2)
    (tmp_path / "manifest.csv").unlink()
    with pytest.raises(MedganError, match="export is incomplete"):
        ExportedDataset(tmp_path)
