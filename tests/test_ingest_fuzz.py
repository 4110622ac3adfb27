"""Ingestion of untrusted files: a malformed corpus made from real DICOM / NIfTI / PNG files by truncation,
bit flips and hostile header values. `training.data.ingest` must account for every file (read or skipped
with a reason), keep the good ones, and never raise; the CLI must finish and report the skips."""
from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from helpers import ROOT
from training import data as D

SIZE = 32
SEED = 20240917
# Files the readers skip with a generic "unexpected error (…)" rather than a specific reason (still skipped
# and reported, never a crash): NaN voxel spacing, zero-length NIfTI dims, a corrupted transfer-syntax UID.
KNOWN_READER_GAPS = {"bad-pixdim-mni.nii", "zero-dims-mni.nii", "flip1-mr.dcm", "flip2-mr.dcm"}


def mni_cropped(path: Path) -> Path:
    """nilearn's MNI152 T1 template, cropped to a small central block (fast to read and slice)."""
    import nilearn
    template = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    img = nib.load(template)
    x, y, z = (s // 2 for s in img.shape[:3])
    block = np.asarray(img.dataobj[x - 24:x + 24, y - 24:y + 24, z - 6:z + 6], dtype=np.float32)
    nib.save(nib.Nifti1Image(block, img.affine), path)
    return path


def png(path: Path, bits: int) -> Path:
    yy, xx = np.mgrid[:48, :48]
    disc = ((yy - 24) ** 2 + (xx - 24) ** 2 < 18 ** 2).astype(np.float64)
    if bits == 16:
        Image.fromarray((disc * 40000 + yy * 100).astype(np.uint16)).save(path)
    else:
        Image.fromarray((disc * 200 + yy).astype(np.uint8)).save(path)
    return path


def originals(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    mni = mni_cropped(folder / "mni.nii")
    return {"ct.dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes(),
            "mr.dcm": Path(get_testdata_file("MR_small.dcm")).read_bytes(),
            "mni.nii": mni.read_bytes(), "mni.nii.gz": gzip.compress(mni.read_bytes(), mtime=0),
            "img8.png": png(folder / "a.png", 8).read_bytes(), "img16.png": png(folder / "b.png", 16).read_bytes()}


def hostile(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Header values chosen to make a naive reader allocate or loop: huge dims, zero/negative spacing."""
    out = []
    if name == "mni.nii":
        for label, dims in (("huge-dims", (3, 30000, 30000, 30000)), ("zero-dims", (3, 0, 48, 12)),
                            ("neg-dims", (3, -5, 48, 12)), ("ndim-9", (9, 48, 48, 12))):
            buf = bytearray(data)
            buf[40:48] = struct.pack("<4h", *dims)
            out.append((f"{label}", bytes(buf)))
        buf = bytearray(data)
        buf[76:92] = struct.pack("<4f", 1, float("nan"), 0.0, -1.0)  # pixdim: NaN, 0 and negative spacing
        out.append(("bad-pixdim", bytes(buf)))
        buf = bytearray(data)
        buf[70:72] = struct.pack("<h", 1234)  # datatype code nibabel does not know
        out.append(("bad-dtype", bytes(buf)))
    if name.endswith(".dcm"):
        for tag, value in ((b"\x28\x00\x10\x00", 0xFFFF), (b"\x28\x00\x10\x00", 0), (b"\x28\x00\x00\x01", 3)):
            at = data.find(tag)  # (0028,0010) Rows / (0028,0100) BitsAllocated, explicit or implicit VR
            if at > 0:
                buf = bytearray(data)
                off = at + 8 if data[at + 4:at + 6].isalpha() else at + 8
                buf[off:off + 2] = struct.pack("<H", value)
                out.append((f"tag{tag.hex()}-{value}", bytes(buf)))
    if name.endswith(".png"):
        buf = bytearray(data)
        buf[16:24] = struct.pack(">II", 1 << 30, 1 << 30)  # IHDR width/height, with a valid CRC
        buf[29:33] = struct.pack(">I", zlib.crc32(bytes(buf[12:29])))
        out.append(("bomb-ihdr", bytes(buf)))
    return out


def corpus(folder: Path) -> dict[str, bytes]:
    """name -> bytes: each original, then truncations, bit flips and hostile headers of it."""
    rng = np.random.default_rng(SEED)
    files: dict[str, bytes] = {}
    for name, data in originals(folder / "originals").items():
        stem, ext = name.split(".", 1)
        files[f"good-{stem}.{ext}"] = data
        cuts = sorted({0, 1, 4, 64, 132, 348, len(data) // 3, len(data) // 2, len(data) - 1} - {len(data)})
        for cut in cuts:
            files[f"trunc{cut}-{stem}.{ext}"] = data[:cut]
        for k in range(8):
            buf = bytearray(data)
            region = min(len(buf), 400) if k < 4 else len(buf)  # header bytes, then anywhere
            for pos in rng.integers(0, region, size=int(rng.integers(1, 12))):
                buf[pos] ^= 1 << int(rng.integers(0, 8))
            files[f"flip{k}-{stem}.{ext}"] = bytes(buf)
        for label, buf in hostile(name, data):
            files[f"{label}-{stem}.{ext}"] = buf
    files["empty.dcm"] = b""
    files["random.nii.gz"] = rng.bytes(4096)
    files["text-as.png"] = b"not an image at all\n" * 10
    files["no-suffix-dicm"] = b"\0" * 128 + b"DICM" + rng.bytes(200)
    return files


@pytest.fixture(scope="module")
def malformed(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("ingest-fuzz")
    files = corpus(root)
    folder = root / "corpus"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


def test_ingest_accounts_for_every_malformed_file_and_keeps_the_good_ones(malformed, artifacts_dir):
    folder, files = malformed
    ds = D.ingest([folder], SIZE, heldout=0.2, progress=False)  # must not raise
    read = {s["id"].split("/", 1)[1] for s in ds.meta["sources"]}
    skipped = {s["file"].split("/", 1)[1]: s["reason"] for s in ds.skipped}
    assert read | set(skipped) == set(files) and not read & set(skipped)
    assert {f"good-{n}" for n in ("ct.dcm", "mr.dcm", "mni.nii", "mni.nii.gz", "img8.png", "img16.png")} <= read
    for name in files:
        if name.startswith(("trunc0-", "trunc1-", "trunc4-")) or name in ("empty.dcm", "random.nii.gz", "text-as.png"):
            assert name in skipped, name  # nothing can be read from these
    for name, reason in skipped.items():
        assert reason and "Traceback" not in reason and len(reason) < 400, (name, reason)
    assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (1, SIZE, SIZE) and len(ds) > 0
    unexpected = sorted(n for n, r in skipped.items() if r.startswith("unexpected error"))
    report = {"files": len(files), "read": len(read), "skipped": len(skipped), "slices": len(ds),
              "unexpected_errors": {n: skipped[n] for n in unexpected}}
    (artifacts_dir / "ingest_fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    # A generic "unexpected error" still skips the file, but means a reader did not recognise the problem.
    # These are the known gaps (reported to training/data/readers.py); anything new fails here.
    assert set(unexpected) <= KNOWN_READER_GAPS, report["unexpected_errors"]
    for name in unexpected:
        assert "Error" in skipped[name], skipped[name]  # at least names what went wrong


@pytest.mark.slow
def test_cli_finishes_and_reports_skips(malformed, tmp_path):
    folder, files = malformed
    small = tmp_path / "in"
    small.mkdir()
    for name in ("good-mr.dcm", "trunc132-ct.dcm", "flip0-mni.nii", "bomb-ihdr-img8.png", "empty.dcm"):
        (small / name).write_bytes(files[name])
    out = tmp_path / "ds.npz"
    proc = subprocess.run([sys.executable, "-m", "training.data", str(small), "--size", str(SIZE), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    for name in ("trunc132-ct.dcm", "bomb-ihdr-img8.png", "empty.dcm"):
        assert name in text, text[-3000:]
    assert len(D.SliceDataset.load(out)) > 0


def test_nothing_usable_is_a_clear_error(malformed, tmp_path):
    folder, files = malformed
    for name in ("empty.dcm", "trunc4-mni.nii", "text-as.png"):
        (tmp_path / name).write_bytes(files[name])
    with pytest.raises(D.DatasetError, match="no usable slices") as err:
        D.ingest([tmp_path], SIZE, progress=False)
    assert "empty.dcm" in str(err.value)
