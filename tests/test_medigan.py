"""medigan: the catalogue as a source, generation in a worker process, our models as medigan packages.

Offline throughout (conftest sets HF_HUB_OFFLINE=1); every generation goes through a real worker process.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from gradio_client import Client
from PIL import Image

from helpers import ROOT, SHIPPED, make_model_folder, running_app
from medgan import Generator, service
from medgan.errors import GenerationError, InvalidArgumentError, SourceUnavailableError
from medgan.generator import latents
from medgan.registry import Registry, default_sources
from medgan.sources.local import LocalSource
from medgan.sources.medigan import (IMAGE_TO_IMAGE, MASK_CONDITIONED, MediganSource, add_to_catalogue,
                                    info_from_entry, read_catalogue, refresh_catalogue, snapshot,
                                    valid_catalogue)
from medgan.sources import NOISE_TO_IMAGE
from medigan_fixtures import (CHDIR_RANDOM, EXITS, HANGS, IMAGE_TO_IMAGE_IDS, MASK_CONDITIONED_IDS, RAISES,
                              REFERENCE_CATALOGUE, SEGFAULTS, add_foreign_package)
from training.publish import medigan_package
from training.publish.export_medigan import MEDGAN_DIR, VENDORED, export, medigan_id

MODELS = ["tiny-test", *SHIPPED]  # our models exported as medigan packages: the tiny one and every shipped one


def foreign_modules() -> set[str]:
    return {m for m in sys.modules if m == "medigan" or m.startswith(("medigan.", "models."))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A medigan home holding the reference catalogue plus our models exported as packages."""
    root = tmp_path_factory.mktemp("medigan")
    weights = root / "weights"
    folders = {"tiny-test": make_model_folder(weights, "tiny-test")}
    folders.update({m: ROOT / "weights" / m for m in SHIPPED})
    home = root / "home"
    add_to_catalogue(home, REFERENCE_CATALOGUE)
    ids = {}
    for name, folder in folders.items():
        ids[name], _, _ = export(folder, root / "packages", home=home)
    return {"home": home, "weights": weights, "folders": folders, "ids": ids}


def expected(folder: Path, count: int, seed: int) -> np.ndarray:
    return Generator.from_folder(folder, device="cpu").generate(count, seed, output_type="np")


# --- catalogue ------------------------------------------------------------------------------------

def test_reference_catalogue_lists_23_models_with_kinds_and_refuses_non_noise(exported):
    before = foreign_modules()
    source = MediganSource(exported["home"])
    infos = {m.id: m for m in source.list_models()}
    ref = {f"medigan:{k}" for k in REFERENCE_CATALOGUE}
    assert ref <= set(infos) and len(ref) == 23 and source.notice == ""
    for model_id, info in infos.items():
        bare = model_id.split(":", 1)[1]
        want = (MASK_CONDITIONED if bare in MASK_CONDITIONED_IDS else
                IMAGE_TO_IMAGE if bare in IMAGE_TO_IMAGE_IDS else NOISE_TO_IMAGE)
        assert info.kind == want, model_id
        assert info.generatable == (want == NOISE_TO_IMAGE) and info.source == "medigan"
    assert sum(m.generatable for m in infos.values() if m.id in ref) == 13
    calc = infos["medigan:00001_DCGAN_MMG_CALC_ROI"]
    assert (calc.modality, calc.organ, calc.resolution, calc.architecture, calc.dataset, calc.license) == \
           ("MG", "breast", 128, "DCGAN", "INbreast", "MIT")
    assert calc.metrics == {"fid_published": 67.6}  # published by the authors, labelled so
    assert "not downloaded" in calc.notice and "offline" in calc.notice
    assert "downloads on first use (needs internet)" in calc.notice
    assert infos["medigan:00017_DCGAN_XRAY_LUNG_NODULES"].modality == "DX"
    assert infos["medigan:00009_PGGAN_POLYP_PATCHES_W_MASKS"].channels == 3
    assert infos["medigan:00003_CYCLEGAN_MMG_DENSITY_FULL"].resolution is None  # 1332x800, not square
    assert "fid_published" not in infos["medigan:00022_WGAN_CARDIAC_AGING"].metrics
    ours = infos[f"medigan:{exported['ids']['tiny-test']}"]
    assert ours.generatable and ours.resolution == 32 and "deterministic" in ours.notice

    registry = Registry([source])
    with pytest.raises(InvalidArgumentError, match="image-to-image.*only noise-to-image"):
        registry.load("medigan:00003_CYCLEGAN_MMG_DENSITY_FULL")
    with pytest.raises(InvalidArgumentError, match="mask-conditioned"):
        source.load("medigan:00007_INPAINT_BRAIN_MRI")
    gen = registry.load("medigan:00001_DCGAN_MMG_CALC_ROI")  # cheap: no worker until generate()
    with pytest.raises(SourceUnavailableError, match="not downloaded yet.*offline.*zenodo.org"):
        gen.generate(2, 0)
    assert foreign_modules() == before  # listing and refusing never import medigan or model code


def test_missing_or_broken_catalogue_lists_the_shipped_snapshot_and_the_rest_works(tmp_path, tiny_model,
                                                                                    monkeypatch):
    monkeypatch.setenv("MEDGAN_MEDIGAN", "0")
    assert "medigan" not in [s.name for s in default_sources()]
    monkeypatch.delenv("MEDGAN_MEDIGAN")
    assert [s.name for s in default_sources()][-1] == "medigan"
    registry = Registry([LocalSource([tiny_model.parent]), MediganSource(tmp_path / "no-home")])
    ids = [m.id for m in registry.list_models()]
    assert ids[0] == "tiny-test" and set(ids[1:]) == {f"medigan:{k}" for k in REFERENCE_CATALOGUE}
    notices = service.source_notices(registry)
    assert len(notices) == 1 and notices[0].startswith("medigan: no medigan catalogue (config/global.json)")
    assert "snapshot" in notices[0] and "downloads on first use (needs internet)" in notices[0]
    assert str(tmp_path) not in notices[0]  # no server path in what the UI shows
    assert registry.load("tiny-test").generate(2, 1, output_type="np").shape == (2, 32, 32)
    with pytest.raises(SourceUnavailableError, match="downloads on first use \\(needs internet\\)"):
        registry.load("medigan:00001_DCGAN_MMG_CALC_ROI").generate(1, 0)
    without = MediganSource(tmp_path / "no-home", snapshot=False)  # the snapshot off: nothing, and why
    assert without.list_models() == [] and "not listed" in without.notice
    with pytest.raises(Exception, match="Unknown model id 'medigan:00001_DCGAN_MMG_CALC_ROI'"):
        Registry([without]).load("medigan:00001_DCGAN_MMG_CALC_ROI")
    broken = tmp_path / "broken"
    (broken / "config").mkdir(parents=True)
    (broken / "config" / "global.json").write_text("{not json")
    source = MediganSource(broken)
    assert len(source.list_models()) == 23 and "unreadable" in source.notice and "snapshot" in source.notice
    assert not (broken / "models").exists()  # listing writes nothing


def test_fresh_offline_install_lists_medigan_models_and_refuses_them_at_once(tmp_path, tiny_model, monkeypatch):
    """A fresh machine: an empty medigan home, offline. The service lists our models plus medigan's 23 (from
    the snapshot); generating one fails at once with a clear error, without starting a worker or writing."""
    home = tmp_path / "fresh-home"
    monkeypatch.setenv("MEDGAN_MEDIGAN_HOME", str(home))
    monkeypatch.setenv("MEDGAN_OFFLINE", "1")
    registry = Registry(default_sources([tiny_model.parent]))
    listing = service.models_json(registry)
    medigan_rows = [m for m in listing if m["source"] == "medigan"]
    assert len(listing) >= 20 and len(medigan_rows) == 23 and "tiny-test" in [m["id"] for m in listing]
    assert all("downloads on first use (needs internet)" in m["notice"] for m in medigan_rows)
    calc = next(m for m in medigan_rows if m["id"] == "medigan:00001_DCGAN_MMG_CALC_ROI")
    assert (calc["modality"], calc["organ"], calc["resolution"], calc["architecture"], calc["license"]) == \
           ("MG", "breast", 128, "DCGAN", "MIT")
    assert calc["metrics"]["fid_published"] == 67.6 and calc["metrics"]["fid_radimagenet_published"] == 1.27
    before = foreign_modules()
    with monkeypatch.context() as refused:  # refused at once: no worker started, no connection tried
        refused.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a worker was started"))
        refused.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("a connection was tried"))
        with pytest.raises(SourceUnavailableError, match="'medigan:00001_DCGAN_MMG_CALC_ROI' downloads on first "
                                                         "use \\(needs internet\\).*offline.*zenodo.org"):
            service.generate("medigan:00001_DCGAN_MMG_CALC_ROI", 1, 2, registry=registry)
    assert not home.exists() and foreign_modules() == before
    with pytest.raises(InvalidArgumentError, match="image-to-image"):
        service.generate("medigan:00003_CYCLEGAN_MMG_DENSITY_FULL", 1, 2, registry=registry)


def test_global_json_wins_over_the_snapshot_and_snapshot_models_are_registered_before_a_run(tmp_path,
                                                                                            monkeypatch):
    home = tmp_path / "home"
    ours = json.loads(json.dumps(REFERENCE_CATALOGUE["00002_DCGAN_MMG_MASS_ROI"]))
    ours["description"]["title"] = "from global.json"
    add_to_catalogue(home, {"00002_DCGAN_MMG_MASS_ROI": ours})
    source = MediganSource(home, refresh=False)
    infos = {m.id: m for m in source.list_models()}
    assert len(infos) == 23 and source.notice == ""
    assert infos["medigan:00002_DCGAN_MMG_MASS_ROI"].title == "from global.json"
    assert "00002_DCGAN_MMG_MASS_ROI" not in source.snapshot_only and len(source.snapshot_only) == 22
    # Online, a snapshot-only model is written into global.json (where medigan's code reads it) before it runs.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MEDGAN_OFFLINE", raising=False)
    calls = []

    def fake_worker(home_, model_id, entry, count, seed, start=0):
        calls.append(model_id)
        assert model_id in read_catalogue(home_)
        return np.zeros((count, 8, 8), np.uint8), {}
    monkeypatch.setattr("medgan.sources.medigan.source.run_worker", fake_worker)
    gen = source.load("medigan:00001_DCGAN_MMG_CALC_ROI")
    assert gen.from_snapshot and gen.generate(2, 0, output_type="np").shape == (2, 8, 8)
    assert calls == ["00001_DCGAN_MMG_CALC_ROI"]
    catalogue = read_catalogue(home)
    assert set(catalogue) == {"00001_DCGAN_MMG_CALC_ROI", "00002_DCGAN_MMG_MASS_ROI"}
    assert catalogue["00002_DCGAN_MMG_MASS_ROI"]["description"]["title"] == "from global.json"  # kept


# --- the shipped snapshot -------------------------------------------------------------------------------

REFERENCE_JSON = ROOT.parent / "shared" / "reference" / "medigan-catalogue.json"  # medigan's real global.json


def test_snapshot_builder_is_deterministic_facts_only_and_checks_its_input(tmp_path):
    """On a small hand-made catalogue (CI needs no file outside the repo): same bytes whatever the key order,
    medigan's prose is not copied, the facts are."""
    entries = {k: json.loads(json.dumps(REFERENCE_CATALOGUE[k]))
               for k in ("00005_DCGAN_MMG_MASS_ROI", "00021_CYCLEGAN_BRAIN_MRI_T1_T2")}
    for entry in entries.values():
        entry["description"]["comment"] = "PROSE THAT MUST NOT BE COPIED"
        entry["description"]["doi"] = ["10.0000/x", ""]
        entry["selection"]["performance"].update({"SSIM": None, "CLF": {"trained_on_fake": {}}, "IS": 2.5})
    entries["00005_DCGAN_MMG_MASS_ROI"]["selection"]["generates"] = ["mass", "masses"]
    reordered = {k: {part: dict(reversed(list(v.items()))) for part, v in reversed(list(e.items()))}
                 for k, e in reversed(list(entries.items()))}
    text = snapshot.render(snapshot.build(entries))
    assert text == snapshot.render(snapshot.build(reordered)) == snapshot.render(snapshot.build(entries))
    assert "PROSE" not in text and "Test package" not in text
    doc = json.loads(text)
    assert doc["count"] == 2 and "medigan" in doc["attribution"] and list(doc["models"]) == sorted(entries)
    mass = doc["models"]["00005_DCGAN_MMG_MASS_ROI"]
    assert mass["execution"] == entries["00005_DCGAN_MMG_MASS_ROI"]["execution"]  # all that running it needs
    assert mass["selection"]["performance"] == {"FID": 180.04, "IS": 2.5} and mass["description"]["doi"] == ["10.0000/x"]
    assert mass["description"]["comment"].startswith("DCGAN, 128² mammography mass (BCDR); noise-to-image.")
    assert "224×192" in doc["models"]["00021_CYCLEGAN_BRAIN_MRI_T1_T2"]["description"]["comment"]
    source = tmp_path / "global.json"
    source.write_text(json.dumps(entries))
    out = tmp_path / "snapshot.json"
    assert snapshot.main(["--build", str(source), "--out", str(out)]) == 0 and out.read_text() == text
    assert snapshot.main(["--check", str(source), "--out", str(out)]) == 0
    source.write_text(json.dumps({**entries, "extra": entries["00005_DCGAN_MMG_MASS_ROI"]}))
    assert snapshot.main(["--check", str(source), "--out", str(out)]) == 1
    with pytest.raises(ValueError, match="not a medigan catalogue"):
        snapshot.build({"x": {"no": "execution"}})


def test_shipped_snapshot_has_23_valid_entries_and_rebuilds_byte_identically():
    doc = json.loads(snapshot.SNAPSHOT.read_text(encoding="utf-8"))
    models = snapshot.load_snapshot()
    assert doc["count"] == len(models) == 23 and set(models) == set(REFERENCE_CATALOGUE) and valid_catalogue(models)
    assert "medigan" in doc["attribution"] and "not measured here" in doc["attribution"]
    for model_id, entry in models.items():
        ref = REFERENCE_CATALOGUE[model_id]
        info = info_from_entry(model_id, entry, Path("/nonexistent"))
        want = (MASK_CONDITIONED if model_id in MASK_CONDITIONED_IDS else
                IMAGE_TO_IMAGE if model_id in IMAGE_TO_IMAGE_IDS else NOISE_TO_IMAGE)
        assert info.kind == want and info.architecture == ref["selection"]["type"], model_id
        assert {k: entry["execution"][k] for k in ref["execution"] if k != "generate_method"} == \
               {k: v for k, v in ref["execution"].items() if k != "generate_method"}, model_id
        assert info.metrics.get("fid_published") == ref["selection"]["performance"]["FID"], model_id
        assert entry["description"]["title"] != ref["description"]["title"]  # our own words
    # The shipped file is what the builder makes of medigan's catalogue (kept beside the repo, in shared/).
    if REFERENCE_JSON.is_file():
        rebuilt = snapshot.render(snapshot.build(json.loads(REFERENCE_JSON.read_text(encoding="utf-8"))))
        assert rebuilt == snapshot.SNAPSHOT.read_text(encoding="utf-8")


class _CatalogueHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []
    body = json.dumps({"00001_DCGAN_MMG_CALC_ROI": REFERENCE_CATALOGUE["00001_DCGAN_MMG_CALC_ROI"]}).encode()

    def do_GET(self):  # noqa: N802
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_catalogue_refresh_only_when_online_keeps_local_entries(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CatalogueHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/config/global.json"
    try:
        home = tmp_path / "home"
        add_foreign_package(home, "T_LOCAL", RAISES)
        assert refresh_catalogue(home, url, max_age_s=0) == "offline" and _CatalogueHandler.hits == []
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("MEDGAN_OFFLINE", raising=False)
        assert refresh_catalogue(home, url, max_age_s=0) == "refreshed" and len(_CatalogueHandler.hits) == 1
        assert set(read_catalogue(home)) == {"00001_DCGAN_MMG_CALC_ROI", "T_LOCAL"}  # ours survives
        assert refresh_catalogue(home, url, max_age_s=3600) == "fresh" and len(_CatalogueHandler.hits) == 1
        dead = f"http://127.0.0.1:{server.server_port + 1 if server.server_port < 65535 else 1}/x"
        assert refresh_catalogue(home, dead, timeout_s=1, max_age_s=0).startswith("failed")
        assert len(read_catalogue(home)) == 2  # the cache is kept
        monkeypatch.setenv("MEDGAN_OFFLINE", "1")
        assert refresh_catalogue(home, url, max_age_s=0) == "offline" and len(_CatalogueHandler.hits) == 1
    finally:
        server.shutdown()


# --- export ---------------------------------------------------------------------------------------

def test_exported_entry_has_medigan_schema_and_our_metrics(tmp_path):
    folder = make_model_folder(tmp_path / "w", "metric-model")
    config = json.loads((folder / "config.json").read_text())
    config["metrics"] = {"fid": 42.5, "kid": {"mean": 0.03, "std": 0.01}, "precision": 0.7, "recall": 0.4,
                         "n_synthetic": 2000, "floor": {"fid": 3.2}}
    (folder / "config.json").write_text(json.dumps(config))
    mid, entry, zip_path = export(folder, tmp_path / "out")
    assert mid == medigan_id("metric-model") == "medgan_metric_model"
    ref = json.loads(json.dumps(REFERENCE_CATALOGUE["00001_DCGAN_MMG_CALC_ROI"]))
    full_keys = {  # the keys of a real catalogue entry (00001), beyond the trimmed fixture
        "execution": {"dependencies", "extension", "generate_method", "image_size", "model_name", "package_link",
                      "package_name"},
        "selection": {"augmentations", "centres", "condition", "dataset", "dataset_type", "depth", "function",
                      "generates", "height", "license", "modality", "organ", "performance",
                      "privacy_preservation", "tags", "type", "use_cases", "vendors", "width", "year"},
        "description": {"comment", "doi", "inputs", "provided_after_epoch", "provided_date", "publication",
                        "title", "trained_date", "version"}}
    for part, keys in full_keys.items():
        assert keys <= set(entry[part]), part
        assert set(ref[part]) <= set(entry[part])
    ex = entry["execution"]
    assert ex["package_link"] == str(zip_path) and Path(ex["package_link"]).is_absolute()
    assert (ex["model_name"], ex["extension"], ex["image_size"]) == ("model", ".safetensors", [32, 32])
    assert ex["generate_method"]["args"]["custom"]["seed"] == 0
    assert ex["generate_method"]["input_latent_vector_size"] == 100
    perf = entry["selection"]["performance"]
    assert (perf["FID"], perf["KID"], perf["precision"], perf["FID_no_images"]) == (42.5, 0.03, 0.7, 2000)
    assert perf["FID_real_vs_real_floor"] == 3.2
    assert json.loads((tmp_path / "out" / f"{mid}.json").read_text()) == {mid: entry}
    with zipfile.ZipFile(zip_path) as zf:
        vendored = [f"_medgan/{m}.py" for m in ("__init__", *VENDORED)]
        assert sorted(zf.namelist()) == sorted(f"{mid}/{n}" for n in
                                               ("README.md", "__init__.py", "config.json", "model.safetensors", *vendored))
        # The package's __init__ is training/publish/medigan_package.py; its inference code is medgan's own modules.
        assert zf.read(f"{mid}/__init__.py") == Path(medigan_package.__file__).read_bytes()
        for module in VENDORED:
            assert zf.read(f"{mid}/_medgan/{module}.py") == (MEDGAN_DIR / f"{module}.py").read_bytes()
            assert b"import medgan" not in zf.read(f"{mid}/_medgan/{module}.py")


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_package_pixels_equal_medgan_on_256_images(name):
    """The package module (as shipped in the zip) gives MedGAN Studio's exact pixels, 256 images per model."""
    folder = ROOT / "weights" / name
    medigan_package._loaded.clear()
    got = medigan_package.sample(folder / "model.safetensors", 256, seed=7)
    assert np.array_equal(got, expected(folder, 256, 7))


@pytest.mark.slow
def test_real_medigan_generates_our_packages_offline(exported, tmp_path):
    """medigan 1.0.0 itself (Generators().generate) runs each exported package, in a subprocess."""
    script = textwrap.dedent("""
        import json, sys, warnings
        import numpy as np
        warnings.simplefilter("ignore")
        from medigan import Generators
        ids, out = json.loads(sys.argv[1]), sys.argv[2]
        gens = Generators()
        for i, mid in enumerate(ids):
            images = gens.generate(model_id=mid, num_samples=5, save_images=False, seed=1234)
            np.save(f"{out}/{i}.npy", np.stack(images))
            gens.generate(model_id=mid, num_samples=5, output_path=f"{out}/png{i}", save_images=True,
                          seed=1234, batch_size=2)  # 3 batches: indices must continue across them
    """)
    names = list(exported["ids"])
    ids = [exported["ids"][n] for n in names]
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(ids), str(tmp_path)], cwd=exported["home"],
                          env={**os.environ, "PYTHONPATH": str(exported["home"])}, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    for i, name in enumerate(names):
        want = expected(exported["folders"][name], 5, 1234)
        assert np.array_equal(np.load(tmp_path / f"{i}.npy", allow_pickle=False), want), name
        pngs = sorted((tmp_path / f"png{i}").glob("*.png"))
        assert [p.name.split("_", 2)[:2] for p in pngs] == [["batch", str(b)] for b in (0, 0, 1, 1, 2)]
        assert all(p.name.endswith(f"seed1234_{k:05d}.png") and "synthetic" in p.name for k, p in enumerate(pngs))
        assert np.array_equal(np.stack([np.array(Image.open(p)) for p in pngs]), want), name


# --- end to end through the app -------------------------------------------------------------------

@pytest.mark.slow
def test_app_generates_medigan_models_in_a_worker_equal_to_ours(exported, tmp_path):
    home = exported["home"]
    chdir_id = add_foreign_package(home, "T_CHDIR", CHDIR_RANDOM)
    dep_id = add_foreign_package(home, "T_MISSING_DEP", RAISES,
                                 dependencies=("numpy", "medgan-test-no-such-package>=1.0"))
    env = {"MEDGAN_WEIGHTS_DIRS": str(exported["weights"]), "MEDGAN_MEDIGAN_HOME": str(home),
           "MEDGAN_REQUEST_TIMEOUT_S": "300"}
    with running_app(env) as app:
        client = Client(app.url, download_files=str(tmp_path), verbose=False)
        listing = {m["id"]: m for m in client.predict(api_name="/models")}
        assert {f"medigan:{k}" for k in REFERENCE_CATALOGUE} <= set(listing)
        for name, mid in exported["ids"].items():
            row = listing[f"medigan:{mid}"]
            assert row["source"] == "medigan" and row["kind"] == NOISE_TO_IMAGE and row["generatable"]
            began = time.perf_counter()
            result = client.predict(f"medigan:{mid}", 1234, 3, api_name="/generate")
            print(f"{name}: /generate through the medigan worker (cold) {time.perf_counter() - began:.1f} s")
            got = np.stack([np.array(Image.open(r["image"])) for r in result])
            assert np.array_equal(got, expected(exported["folders"][name], 3, 1234)), name  # exactly equal
            assert result[0]["caption"] == f"SYNTHETIC · medigan:{mid} · seed 1234 · #0"
        assert listing["medigan:00003_CYCLEGAN_MMG_DENSITY_FULL"]["generatable"] is False
        with pytest.raises(Exception, match="image-to-image"):
            client.predict("medigan:00003_CYCLEGAN_MMG_DENSITY_FULL", 1, 2, api_name="/generate")
        with pytest.raises(Exception, match="medgan-test-no-such-package>=1.0"):
            client.predict(dep_id, 1, 2, api_name="/generate")
        # Foreign code that calls os.chdir: the images still come back, the server's cwd is untouched.
        result = client.predict(chdir_id, 77, 2, api_name="/generate")
        got = np.stack([np.array(Image.open(r["image"])) for r in result])
        rng = np.random.RandomState(77)  # the worker seeded numpy's global RNG from the seed
        assert np.array_equal(got, np.rint(np.stack([rng.rand(8, 8) for _ in range(2)]) * 255).astype(np.uint8))
        server = next(p for p in psutil.Process(app.pid).children(recursive=True) if "python" in p.name())
        assert Path(server.cwd()) == ROOT
        assert len(client.predict("tiny-test", 5, 2, api_name="/generate")) == 2  # still serving


# --- faults, in-process registry --------------------------------------------------------------------

@pytest.mark.slow
def test_faulty_packages_give_clear_errors_and_the_registry_keeps_serving(tmp_path, tiny_model, monkeypatch):
    home = tmp_path / "home"
    ids = {name: add_foreign_package(home, f"T_{name.upper()}", body)
           for name, body in {"raises": RAISES, "hangs": HANGS, "exits": EXITS, "segfaults": SEGFAULTS}.items()}
    missing = add_foreign_package(home, "T_DEPS", RAISES, dependencies=("numpy", "no-such-dist-xyz", "numpy<1"))
    registry = Registry([LocalSource([tiny_model.parent]), MediganSource(home)])
    cwd, before = os.getcwd(), foreign_modules()

    def attempt(model_id: str) -> tuple[Exception | None, float]:
        began = time.perf_counter()
        try:
            registry.load(model_id).generate(2, 0, output_type="np")
        except Exception as exc:  # noqa: BLE001 - examined below
            return exc, time.perf_counter() - began
        return None, time.perf_counter() - began

    crashing = [name for name in ids if name != "hangs"]
    with ThreadPoolExecutor(3) as pool:  # 3 cold workers at once: also exercises concurrent calls
        results = dict(zip(crashing, pool.map(attempt, [ids[n] for n in crashing])))
    monkeypatch.setenv("MEDGAN_MEDIGAN_TIMEOUT_S", "3")  # alone: a loaded CPU must not time out the others
    results["hangs"] = attempt(ids["hangs"])
    err, _ = results["raises"]
    assert isinstance(err, GenerationError) and "RuntimeError: boom from the test package" in str(err)
    assert "(generate)" in str(err) and "Traceback" not in str(err)
    err, seconds = results["hangs"]
    assert isinstance(err, GenerationError) and "timed out after 3 s" in str(err)
    assert seconds < 60  # start-up (imports) + 3 s, then the whole process group is killed
    child = int((home / "models" / "T_HANGS" / "child.pid").read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    err, _ = results["exits"]
    assert isinstance(err, GenerationError) and "called sys.exit(3)" in str(err)
    err, _ = results["segfaults"]
    assert isinstance(err, GenerationError) and "killed by signal 11" in str(err)
    with pytest.raises(SourceUnavailableError, match=r"not installed: no-such-dist-xyz, numpy<1 \(installed"):
        registry.load(missing).generate(1, 0)
    for err, _ in results.values():
        assert str(home) not in str(err) and str(tmp_path) not in str(err)
    assert os.getcwd() == cwd and foreign_modules() == before
    assert registry.load("tiny-test").generate(3, 9, output_type="np").shape == (3, 32, 32)
