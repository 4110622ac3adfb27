"""medigan: the catalogue as a source, generation in a worker process, our models as medigan packages.

Offline throughout (conftest sets HF_HUB_OFFLINE=1); every generation goes through a real worker process.
"""
from __future__ import annotations

import http.server
import json
import os
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
                                    read_catalogue, refresh_catalogue)
from medgan.sources import NOISE_TO_IMAGE
from medigan_fixtures import (CHDIR_RANDOM, EXITS, HANGS, IMAGE_TO_IMAGE_IDS, MASK_CONDITIONED_IDS, RAISES,
                              REFERENCE_CATALOGUE, SEGFAULTS, add_foreign_package)
from training import medigan_package
from training.export_medigan import MEDGAN_DIR, VENDORED, export, medigan_id

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


def test_missing_or_broken_catalogue_gives_a_notice_and_the_rest_works(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("MEDGAN_MEDIGAN", "0")
    assert "medigan" not in [s.name for s in default_sources()]
    monkeypatch.delenv("MEDGAN_MEDIGAN")
    assert [s.name for s in default_sources()][-1] == "medigan"
    registry = Registry([LocalSource([tiny_model.parent]), MediganSource(tmp_path / "no-home")])
    assert [m.id for m in registry.list_models()] == ["tiny-test"]
    notices = service.source_notices(registry)
    assert len(notices) == 1 and notices[0].startswith("medigan: medigan catalogue not available")
    assert str(tmp_path) not in notices[0]  # no server path in what the UI shows
    assert registry.load("tiny-test").generate(2, 1, output_type="np").shape == (2, 32, 32)
    with pytest.raises(Exception, match="Unknown model id 'medigan:00001_DCGAN_MMG_CALC_ROI'"):
        registry.load("medigan:00001_DCGAN_MMG_CALC_ROI")
    broken = tmp_path / "broken"
    (broken / "config").mkdir(parents=True)
    (broken / "config" / "global.json").write_text("{not json")
    source = MediganSource(broken)
    assert source.list_models() == [] and "unreadable" in source.notice


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
        # The package's __init__ is training/medigan_package.py; its inference code is medgan's own modules.
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
