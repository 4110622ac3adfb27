"""`python -m training.data … --export-slices DIR --format png|jpg`: the dataset's own slices as image files with a
manifest, under the dataset's pseudonyms, written whole or not at all."""
from __future__ import annotations

import contextlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from helpers import patient_dicoms
from training import data as D
from training.data import cli as data_cli
from training.data.export import MANIFEST_COLUMNS
from training.data.pseudonyms import is_pseudonym

PATIENTS = [("PID-424242", "DOE^JANE"), ("PID-515151", "ROE^RICHARD")]
SECRETS = ["PID-424242", "PID-515151", "DOE", "JANE", "ROE", "RICHARD", "JaneDoe", "sub-07", "T1w"]
# Measured on these fixtures (32², Pillow's libjpeg, quality 95): max |JPG - PNG| 8, mean 1.42 grey levels.
JPG_MAX_ABS, JPG_MEAN_ABS = 12, 2.5


def make_scans(root: Path) -> Path:
    """scans/JaneDoe/: 3 DICOMs per patient (MR_small, identifiers set, pixels shifted) and a BIDS NIfTI volume."""
    folder = patient_dicoms(root / "scans" / "JaneDoe", PATIENTS, 3, shift=3)
    vol = np.zeros((40, 50, 30), np.float32)
    vol[5:35, 5:45, 2:28] = 300
    vol[30:38, 38:48, 18:24] = 1000
    vol += np.random.default_rng(0).normal(0, 30, vol.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / "sub-07_T1w.nii.gz")
    return root / "scans"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The .npz and a PNG export in one run; a JPG export alone in a second run with the first run's key."""
    root = tmp_path_factory.mktemp("export")
    make_scans(root)
    with contextlib.chdir(root):
        assert data_cli.main(["scans", "--size", "32", "--out", "data/ds.npz", "--export-slices", "png",
                       "--format", "png", "--quiet"]) == 0
        assert data_cli.main(["scans", "--size", "32", "--export-slices", "jpg", "--format", "jpg",
                       "--key-file", "data/ds.keys.json", "--quiet"]) == 0
    return root


def read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L" and not dict(getattr(img, "text", {}) or {})  # plain grayscale, no marks
        return np.asarray(img)


def test_png_round_trip_is_exact_and_manifest_matches_the_dataset(work):
    ds = D.SliceDataset.load(work / "data" / "ds.npz")
    rows = D.read_manifest(work / "png")
    assert len(rows) == len(ds) == 36 and list(rows[0]) == list(MANIFEST_COLUMNS)
    assert {r["plane"] for r in rows} == {"native", "axial"}
    files = sorted(p.relative_to(work / "png").as_posix() for p in (work / "png").rglob("*.png"))
    assert files == sorted(r["file"] for r in rows)
    for i, r in enumerate(rows):
        assert r["file"] == f"{ds.split[i]}/{i:06d}.png"
        np.testing.assert_array_equal(read(work / "png" / r["file"]), ds.images[i, 0])
        assert (r["source"], r["subject"], r["split"]) == (ds.source[i], ds.subject[i], ds.split[i])
        assert (int(r["axis"]), int(r["index"]), int(r["level"])) == (ds.axis[i], ds.index[i], ds.level[i])
        assert r["plane"] == D.PLANES[int(ds.axis[i])]
        level = int(ds.level[i])
        assert r["level_label"] == (D.LEVEL_NAMES[2][level] if ds.axis[i] == 2 else "")
    axial = [r for r in rows if r["plane"] == "axial"]
    assert {r["level_label"] for r in axial} == set(D.LEVEL_NAMES[2])


def test_export_uses_the_dataset_pseudonyms_and_leaks_no_identifiers(work):
    ds = D.SliceDataset.load(work / "data" / "ds.npz")
    for folder in ("png", "jpg"):
        rows = D.read_manifest(work / folder)
        assert all(is_pseudonym(r["source"]) and is_pseudonym(r["subject"]) for r in rows)
        assert [r["source"] for r in rows] == ds.source.tolist()  # same key -> same pseudonyms
        blob = (work / folder / "manifest.csv").read_text().lower()
        names = " ".join(p.as_posix() for p in (work / folder).rglob("*")).lower()
        assert not [s for s in SECRETS if s.lower() in blob or s.lower() in names]
        assert not list((work / folder).rglob("*.keys.json"))  # the key stays outside the folder
    assert (work / "jpg.keys.json").is_file()  # export alone: its keys file beside the folder


def test_jpg_round_trip_within_measured_tolerance(work):
    ds = D.SliceDataset.load(work / "data" / "ds.npz")
    rows = D.read_manifest(work / "jpg")
    assert all(r["file"].endswith(".jpg") for r in rows)
    diff = np.stack([np.abs(read(work / "jpg" / r["file"]).astype(int) - ds.images[i, 0]) for i, r in
                     enumerate(rows)])
    assert diff.max() <= JPG_MAX_ABS and diff.mean() <= JPG_MEAN_ABS, (diff.max(), diff.mean())
    assert diff.max() > 0  # lossy indeed: PNG is the format for exact pixels


def test_bad_format_and_bad_target_are_refused(work, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        data_cli.main([str(work / "scans"), "--export-slices", str(tmp_path / "x"), "--format", "gif", "--quiet"])
    assert exc.value.code == 2 and "--format must be png or jpg, got 'gif'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data_cli.main([str(work / "scans"), "--out", str(tmp_path / "x.npz"), "--format", "jpg"])
    assert "--format applies to --export-slices" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data_cli.main([str(work / "scans")])
    assert "--out DATASET.npz|DIR or --export-slices DIR is required" in capsys.readouterr().err
    ds = D.SliceDataset.load(work / "data" / "ds.npz")
    with pytest.raises(D.DatasetError, match="unknown slice format 'tiff'; choose from png, jpg"):
        D.export_slices(ds, tmp_path / "y", "tiff")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(D.DatasetError, match="already exists and is not an empty folder"):
        D.export_slices(ds, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    raw = D.ingest([work / "scans"], 32, progress=False)  # originals in memory: refused until pseudonymised
    with pytest.raises(D.DatasetError, match="pseudonymise it before exporting"):
        D.export_slices(raw, tmp_path / "z")
    assert not (tmp_path / "z").exists()


def test_export_is_atomic(work, tmp_path, monkeypatch):
    ds = D.SliceDataset.load(work / "data" / "ds.npz")
    (tmp_path / "empty").mkdir()
    assert D.export_slices(ds.subset(np.arange(len(ds)) < 3), tmp_path / "empty", "png") == tmp_path / "empty"
    assert len(D.read_manifest(tmp_path / "empty")) == 3  # an empty folder is filled
    saved, calls = Image.Image.save, []

    def failing_save(self, *args, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return saved(self, *args, **kw)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        D.export_slices(ds, tmp_path / "half", "png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no partial folder, no temp left
