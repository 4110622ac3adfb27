"""Dataset folders (training.data.shards / .stream): the same slices as an .npz, parallel and resumable ingestion,
the subject split across shards, every reader, and training from shards (bit-identical resume)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import SHIPPED

from scripts.dicom_corpus import make_corpus
from training.data import DatasetError, load_dataset
from training.data.cli import main as data_main
from training.data.lazy import ShardImages, pixels_sha256
from training.data.shards import INDEX, PartSlice, ShardWriter, open_shards, save_shards
from training.gan import checkpoint as ckpt
from training.gan.cli import main as train_main

ROOT = Path(__file__).resolve().parent.parent
SIZE = 32


def volumes(folder: Path, subjects: int = 3, depth: int = 12) -> Path:
    """BIDS-named NIfTI volumes of head-like ellipsoids: files of many slices, so one file spans shards."""
    rng = np.random.default_rng(5)
    zz, yy, xx = np.mgrid[-1:1:depth * 1j, -1:1:24j, -1:1:24j]
    for s in range(subjects):
        vol = ((xx / 0.8) ** 2 + (yy / 0.9) ** 2 + (zz / 1.1) ** 2 < 1) * 300.0 + rng.normal(0, 10, xx.shape)
        path = folder / f"sub-{s:02d}" / "anat" / f"sub-{s:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)).astype(np.float32), np.eye(4)), path)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """48 DICOM slices of 8 made-up subjects and 3 NIfTI volumes of 12 slices."""
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root / "dicom", 48, size=48, per_series=6)
    volumes(root / "nifti")
    return root


def ingest(corpus: Path, out: Path, *extra: str) -> int:
    return data_main([str(corpus / "dicom"), str(corpus / "nifti"), "--size", str(SIZE), "--out", str(out),
                      "--quiet", "--seed", "1", *extra])  # seed 1 holds out a volume: level labels on both sides


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; dataset.json without its creation time and its keys file's name (the folder's)."""
    out = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        if path.name == "dataset.json":
            info = json.loads(data)
            assert info.pop("keys_file") == info["meta"]["pseudonyms"].pop("keys_file") == f"{folder.name}.keys.json"
            info["meta"].pop("created_utc")
            data = json.dumps(info, sort_keys=True).encode()
        out[path.name] = data
    return out


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> dict[str, Path]:
    """The same input as an .npz, as a folder (1 worker) and as a folder (2 workers), shards of 5 slices."""
    root = tmp_path_factory.mktemp("built")
    assert ingest(corpus, root / "one.npz") == 0
    assert ingest(corpus, root / "one", "--shard-size", "5", "--key-file", str(root / "one.keys.json")) == 0
    assert ingest(corpus, root / "two", "--shard-size", "5", "--workers", "2",
                  "--key-file", str(root / "one.keys.json")) == 0
    return {"npz": root / "one.npz", "folder": root / "one", "workers": root / "two"}


def assert_same_slices(a, b) -> None:
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    for name in ("source", "subject", "split", "axis", "index", "level"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_a_folder_holds_the_slices_labels_and_meta_of_the_npz(built):
    npz, folder = load_dataset(str(built["npz"]), SIZE), load_dataset(str(built["folder"]), SIZE)
    assert isinstance(folder.images, ShardImages) and folder.images.shape == npz.images.shape
    assert_same_slices(npz, folder)
    assert {k: v for k, v in npz.meta.items() if k != "created_utc"} == \
           {k: v for k, v in folder.meta.items() if k != "created_utc"}
    assert len(npz) == 48 + 3 * 12 - npz.meta["counts"]["dropped_empty"] - npz.meta["counts"]["dropped_gap"]
    shards = sorted(built["folder"].glob("images-*.npy"))
    assert len(shards) == -(-len(npz) // 5)  # full shards of 5, no gap dropped (subject split)
    assert all(np.load(p, mmap_mode="r").shape[0] <= 5 for p in shards)
    table = pq.read_table(built["folder"] / INDEX).to_pydict()
    assert list(table) == ["shard", "row", "source", "subject", "split", "axis", "index", "level", "contrast"]
    info = json.loads((built["folder"] / "dataset.json").read_text())
    assert info["complete"] and info["keys_file"] == "one.keys.json" and info["pipeline_version"] >= 2


def test_two_workers_write_the_same_folder_as_one(built):
    assert folder_files(built["folder"]) == folder_files(built["workers"])


def test_no_subject_is_in_both_splits_across_shards(built):
    ds = open_shards(built["folder"])
    table = pq.read_table(built["folder"] / INDEX).to_pydict()
    split_of: dict[str, set] = {}
    shards_of: dict[str, set] = {}
    for subject, split, shard in zip(table["subject"], table["split"], table["shard"]):
        split_of.setdefault(subject, set()).add(split)
        shards_of.setdefault(subject, set()).add(shard)
    assert all(len(s) == 1 for s in split_of.values())
    assert {"train", "heldout"} == set().union(*split_of.values())
    assert any(len(s) > 1 for s in shards_of.values())  # subjects do span shards
    assert ds.meta["counts"]["train_subjects"] + ds.meta["counts"]["heldout_subjects"] == len(split_of) == 11


def test_the_folder_holds_pseudonyms_only_and_its_keys_lie_beside_it(built):
    text = b"".join(p.read_bytes() for p in built["folder"].iterdir() if p.suffix != ".npy")
    for original in (b"SYN-0001", b"sub-01", b"SYNTHETIC", b"slice-000", b"nifti", b"dicom"):
        assert original not in text, original
    keys = json.loads((built["folder"].parent / "one.keys.json").read_text())
    assert "SYN-0001" in keys["subjects"].values()
    assert keys["identifiers"] and "SYNTHETIC^PHANTOM" in json.dumps(keys["identifiers"])


class Stop(Exception):
    pass


def test_a_failure_after_some_shards_resumes_without_duplicate_or_missing_slices(built, corpus, tmp_path,
                                                                                monkeypatch):
    """Shards of 5 and NIfTI files of 12 slices: the stop falls mid-file; the re-run finishes it exactly."""
    commit, calls = ShardWriter.commit, []

    def failing(self):
        calls.append(self.k)
        if len(calls) == 12:  # after 11 shards: the 48 DICOM slices fill 9.6, the first volume is half written
            raise Stop
        commit(self)

    monkeypatch.setattr(ShardWriter, "commit", failing)
    with pytest.raises(Stop):
        ingest(corpus, tmp_path / "out", "--shard-size", "5", "--key-file", str(built["npz"].with_suffix(".keys.json")))
    monkeypatch.setattr(ShardWriter, "commit", commit)
    assert len(list((tmp_path / "out").glob("images-*.npy"))) == 11
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*.rows.json"))]
    finished = {e["id"] for r in records for e in r["sources"]}
    assert {f for r in records for f in r["rows"]["source"]} - finished  # a file with only some slices written
    with pytest.raises(DatasetError, match="still being ingested"):
        open_shards(tmp_path / "out")
    assert ingest(corpus, tmp_path / "out", "--shard-size", "5") == 0
    assert folder_files(tmp_path / "out") == folder_files(built["folder"])


def test_a_killed_ingestion_with_two_workers_resumes(built, corpus, tmp_path):
    """A real SIGKILL of the ingesting process (and so of its pool) after 3 shards; the same command resumes."""
    out = tmp_path / "out"
    argv = [str(corpus / "dicom"), str(corpus / "nifti"), "--size", str(SIZE), "--out", str(out), "--quiet",
            "--seed", "1", "--shard-size", "5", "--workers", "2",
            "--key-file", str(built["npz"].with_suffix(".keys.json"))]
    script = ("import os, signal, sys\n"
              "from training.data.shards import ShardWriter\n"
              "commit = ShardWriter.commit\n"
              "def killing(self):\n"
              "    if self.k == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
              "    commit(self)\n"
              "ShardWriter.commit = killing\n"
              "from training.data.cli import main\n"
              f"sys.exit(main({argv!r}))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert sorted(p.name for p in out.glob("images-*.npy")) == [f"images-0000{k}.npy" for k in range(3)]
    assert list(out.glob(".part.raw.tmp-*"))  # the workers' part files the kill left: the re-run removes them
    assert (tmp_path / "out.keys.journal.jsonl").is_file()  # names given between shards, replayed on resume
    assert data_main(argv) == 0
    assert not (tmp_path / "out.keys.journal.jsonl").exists()
    assert folder_files(out) == folder_files(built["folder"])


@pytest.mark.parametrize("fault, says", [("killed", "its worker process ended"),
                                         ("disk full", "No space left on device")])
def test_a_failing_worker_is_a_clear_error_and_the_rerun_resumes(built, corpus, tmp_path, monkeypatch, capsys,
                                                                 fault, says):
    """A worker that dies (out of memory, killed) or cannot write its part file stops the ingestion with an error
    naming the files it had (no hang); the slices stored before are kept and the same command finishes."""
    import training.data.stream as stream

    parent, read_one, write_all = os.getpid(), stream.read_one, stream.write_all

    def dying(path, *args):
        if os.getpid() != parent and path.parent.name == "SYN-0007":
            os.kill(os.getpid(), 9)
        return read_one(path, *args)

    def no_space(fh, data):
        if os.getpid() != parent:
            raise OSError(28, "No space left on device")
        return write_all(fh, data)

    # forked workers inherit the patch
    monkeypatch.setattr(stream, *(("read_one", dying) if fault == "killed" else ("write_all", no_space)))
    out = tmp_path / "out"
    argv = ["--shard-size", "5", "--workers", "2", "--key-file", str(built["npz"].with_suffix(".keys.json"))]
    assert ingest(corpus, out, *argv) == 2
    err = capsys.readouterr().err
    assert says in err and "reading files" in err and "run the same command again" in err, err
    if fault == "killed":
        assert 0 < len(list(out.glob("images-*.npy"))) < 10  # what came before the dead worker's files is kept
    monkeypatch.undo()
    assert ingest(corpus, out, *argv) == 0
    assert folder_files(out) == folder_files(built["folder"])


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_the_shard_writer_takes_arrays_and_part_files_alike(tmp_path, monkeypatch, kernel_copy):
    """Slices from the buffer and from workers' part files, mixed and across shard ends, give the shards np.save
    would write; a part file goes once released and copied. Without os.copy_file_range (another OS, or a file
    system that refuses it) the bytes are copied through this process instead."""
    if not kernel_copy:
        def refuse(*args, **kwargs):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (11, 6, 6), dtype=np.uint8)
    parts = [tmp_path / "a.raw", tmp_path / "b.raw"]
    parts[0].write_bytes(images[2:7].tobytes())  # slices 2-6
    parts[1].write_bytes(images[7:11].tobytes())  # slices 7-10, the first of them written before (a resume)
    writer = ShardWriter(tmp_path, 4, 6)
    where = [writer.add(images[i]) for i in (0, 1)]
    where += [writer.add(PartSlice(parts[0], i)) for i in range(5)]
    writer.release(parts[0])
    assert parts[0].exists()  # its last slice is in the shard not yet written
    where += [writer.add(images[7])] + [writer.add(PartSlice(parts[1], i)) for i in (1, 2, 3)]
    writer.release(parts[1])
    writer.commit()
    assert not parts[0].exists() and not parts[1].exists()
    assert where == [(k // 4, k % 4) for k in range(11)]
    for k in range(3):
        want = tmp_path / f"want-{k}.npy"
        np.save(want, images[4 * k:4 * k + 4, None])
        assert (tmp_path / f"images-0000{k}.npy").read_bytes() == want.read_bytes()


def test_a_folder_of_other_settings_or_files_is_refused(built, corpus, tmp_path, capsys):
    assert ingest(corpus, built["folder"], "--shard-size", "5", "--seed", "3") == 2
    assert "holds another ingestion" in capsys.readouterr().err and "seed" not in str(built["folder"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert ingest(corpus, tmp_path / "other") == 2
    assert "not empty and holds no dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ingest(corpus, tmp_path / "x.npz", "--workers", "2")


def test_a_complete_folder_is_not_rewritten(built, corpus):
    before = {p.name: p.stat().st_mtime_ns for p in built["folder"].iterdir()}
    assert ingest(corpus, built["folder"], "--shard-size", "5") == 0
    assert {p.name: p.stat().st_mtime_ns for p in built["folder"].iterdir()} == before


def test_shard_images_index_like_an_array(built):
    npz = np.load(built["npz"])["images"]
    lazy = open_shards(built["folder"]).images
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(npz))[:17]
    mask = rng.random(len(npz)) < 0.3
    assert np.array_equal(lazy[idx], npz[idx]) and np.array_equal(lazy[mask], npz[mask])
    assert np.array_equal(lazy[3], npz[3]) and np.array_equal(lazy[2:9], npz[2:9])
    assert np.array_equal(lazy[idx, 0], npz[idx, 0])
    assert np.array_equal(np.asarray(lazy.subset(mask).subset(slice(1, 4))), npz[mask][1:4])
    assert pixels_sha256(lazy) == pixels_sha256(npz)
    small = load_dataset(str(built["npz"]), 16).images
    assert np.array_equal(np.asarray(load_dataset(str(built["folder"]), 16).images), small)


def test_every_reader_takes_either_form(built):
    from training.evaluation.downstream.task import load_task
    from training.evaluation.evaluate import load_real
    from training.gan.config import TrainConfig
    from training.gan.inputs import load_training_data

    a, b = load_real(str(built["npz"]), SIZE), load_real(str(built["folder"]), SIZE)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.split, b.split) and a.recorded == b.recorded
    ta, tb = (load_task("level", str(built[k]), SIZE, (2,))[0] for k in ("npz", "folder"))
    assert np.array_equal(ta.x_train, tb.x_train) and np.array_equal(ta.y_test, tb.y_test) and len(ta.x_test)
    da, db = (load_training_data(TrainConfig(data=str(built[k]), size=SIZE)) for k in ("npz", "folder"))
    assert isinstance(db.images, ShardImages) and da.info == db.info
    assert np.array_equal(da.images, np.asarray(db.images))


def test_a_builtin_in_memory_dataset_saves_as_a_folder(built, tmp_path):
    ds = load_dataset(str(built["npz"]), SIZE)
    save_shards(ds, tmp_path / "copy", shard_size=7)
    assert_same_slices(ds, open_shards(tmp_path / "copy"))


TINY = ["--size", str(SIZE), "--batch-size", "8", "--base-width", "8", "--d-width", "8", "--threads", "1",
        "--log-every", "2", "--sample-every", "4", "--ckpt-every", "4", "--r1-every", "2", "--seed", "7"]


@pytest.mark.slow
def test_training_from_a_folder_equals_the_npz_and_resumes_bit_identically(built, tmp_path):
    """The device sees only batches, drawn from the same index stream: a folder trains exactly like its .npz,
    and 4 steps + --resume 4 more equal 8 straight."""
    common = [*TINY, "--recipe", "dcgan"]
    assert train_main(["--data", str(built["npz"]), *common, "--steps", "8", "--out", str(tmp_path / "npz")]) == 0
    assert train_main(["--data", str(built["folder"]), *common, "--steps", "8", "--out", str(tmp_path / "a")]) == 0
    assert train_main(["--data", str(built["folder"]), *common, "--steps", "4", "--out", str(tmp_path / "b")]) == 0
    assert train_main(["--resume", str(tmp_path / "b"), "--steps", "8"]) == 0
    runs = {name: ckpt.load_checkpoint(tmp_path / name)[0] for name in ("npz", "a", "b")}
    assert set(runs["a"]) == set(runs["b"]) == set(runs["npz"])
    assert [k for k in runs["a"] if not torch.equal(runs["a"][k], runs["b"][k])] == []
    assert [k for k in runs["a"] if not torch.equal(runs["a"][k], runs["npz"][k])] == []
    config = json.loads((tmp_path / "a" / "model" / "config.json").read_text())
    npz_config = json.loads((tmp_path / "npz" / "model" / "config.json").read_text())
    assert config["training_data"]["sha256"] == npz_config["training_data"]["sha256"]


def test_the_training_fid_curve_compares_with_a_bounded_sample_read_from_the_shards(built, monkeypatch):
    """--fid-every on a folder: all slices when few, else a seeded sample of FID_REAL_MAX rows, read from the shards
    alone (the rest of the set never reaches memory)."""
    from training.gan import fidlog

    images = open_shards(built["folder"]).images
    assert np.array_equal(fidlog.fid_reference(images), np.asarray(images)[:, 0])
    monkeypatch.setattr(fidlog, "FID_REAL_MAX", 10)
    asked = []
    getitem = ShardImages.__getitem__
    monkeypatch.setattr(ShardImages, "__getitem__", lambda self, key: asked.append(key) or getitem(self, key))
    sample = fidlog.fid_reference(images)
    assert sample.shape == (10, SIZE, SIZE) and len(asked) == 1 and len(asked[0]) == 10
    assert np.array_equal(sample, np.asarray(load_dataset(str(built["npz"]), SIZE).images)[asked[0], 0])
    assert np.array_equal(fidlog.fid_reference(images), sample)  # seeded: the same sample every time


@pytest.mark.slow
def test_training_from_a_folder_logs_the_cheap_fid_curve(built, tmp_path):
    """--fid-every on a folder: FID points in metrics.jsonl, their snapshots and fid.png."""
    assert train_main(["--data", str(built["folder"]), *TINY, "--recipe", "dcgan", "--steps", "4", "--fid-every", "2",
                       "--fid-images", "16", "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    points = [r for r in records if "fid" in r]
    assert [r["step"] for r in points] == [2, 4] and all(np.isfinite(r["fid"]) and r["fid"] > 0 for r in points)
    assert (tmp_path / "run" / "fid.png").is_file() and len(list((tmp_path / "run" / "snapshots").iterdir())) == 2


PRE_FOLDER = ROOT / "tests" / "data" / "pre-folder.npz"  # and its keys file beside it


def test_an_npz_written_before_dataset_folders_loads_and_matches_todays_ingestion(tmp_path):
    """tests/data/pre-folder.npz: `python -m scripts.dicom_corpus dicom --files 16 --size 40 --per-series 4`
    ingested (`--size 32 --seed 1`) by training.data as it was before dataset folders. Today's readers load it, and
    today's ingestion of the same files with its keys file gives the same slices and labels, as .npz and folder."""
    from training.evaluation.evaluate import load_real
    from training.gan.config import TrainConfig
    from training.gan.inputs import load_training_data

    make_corpus(tmp_path / "dicom", 16, size=40, per_series=4)
    keys = tmp_path / "pre.keys.json"
    keys.write_bytes(PRE_FOLDER.with_suffix(".keys.json").read_bytes())
    for out in ("today.npz", "today"):
        assert data_main([str(tmp_path / "dicom"), "--size", "32", "--seed", "1", "--quiet", "--out",
                          str(tmp_path / out), "--key-file", str(keys)]) == 0
    old = load_dataset(str(PRE_FOLDER), 32)
    assert len(old) == 16 and set(old.split) == {"train", "heldout"}
    for out in ("today.npz", "today"):
        today = load_dataset(str(tmp_path / out), 32)
        assert_same_slices(old, today)
        assert today.meta["counts"] == old.meta["counts"] and today.meta["sources"] == old.meta["sources"]
    real = load_real(str(PRE_FOLDER), 32)
    assert np.array_equal(real.images, old.images[:, 0]) and np.array_equal(real.split, old.split)
    data = load_training_data(TrainConfig(data=str(PRE_FOLDER), size=32))
    assert np.array_equal(np.asarray(data.images), old.images[old.split == "train"])


@pytest.mark.slow
def test_the_shipped_models_data_builds_as_folders_and_trains(tmp_path):
    """Each shipped model's dataset, built with `--dataset NAME --out DIR/`, holds the very slices the model was
    trained on (its train split hashes to config.json's training_data.sha256); a few steps train from one."""
    from medgan.config import ModelConfig
    from training.evaluation import audit
    from training.evaluation.evaluate import load_real

    configs = {name: ModelConfig.load(ROOT / "weights" / name) for name in SHIPPED}
    for dataset in sorted({c.training_data["name"] for c in configs.values()}):
        assert data_main(["--dataset", dataset, "--size", "64", "--out", str(tmp_path / dataset), "--quiet"]) == 0
        real = load_real(str(tmp_path / dataset), 64)
        for name, config in configs.items():
            if config.training_data["name"] == dataset:
                members, how = audit.find_members(real, config.training_data["sha256"])
                assert len(members) == config.training_data["train_slices"] and "sha256 equal" in how, name
    assert train_main(["--data", str(tmp_path / "chest-ct"), *TINY, "--arch", "style", "--condition", "level",
                       "--steps", "4", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_the_corpus_script_writes_plausible_dicom(tmp_path):
    import pydicom

    assert subprocess.run([sys.executable, "-m", "scripts.dicom_corpus", str(tmp_path / "c"), "--files", "5",
                           "--size", "16", "--per-series", "2"], cwd=ROOT, env={**os.environ}).returncode == 0
    files = sorted((tmp_path / "c").rglob("*.dcm"))
    assert [f.parent.name for f in files] == ["SYN-0001"] * 2 + ["SYN-0002"] * 2 + ["SYN-0003"]
    ds = pydicom.dcmread(files[1])
    assert ds.Modality == "MR" and ds.InstanceNumber == 2 and ds.pixel_array.shape == (16, 16)
    assert float(ds.ImagePositionPatient[2]) == 1.0 and ds.pixel_array.std() > 0
