"""Every code example of README.md is executed, and checked against what the README shows:

- the ```python blocks of "Use from Python": against a running `python app.py` (gradio_client; the queue-free
  route's block in tests/test_fast_route.py) and in process (medgan);
- the ```bash blocks: the quick start's test command is the one `.ci/run` runs (CI executes it) and its
  `python app.py` is what `medgan.testing.running_app` starts here; the others run as written in a temporary
  folder, on small stand-ins (a few DICOMs to ingest, `--count 16` instead of 100,000, two training steps, 16
  images to evaluate) given as extra arguments after the README's own, and the pushes go to a fake Hub.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fake_hub import fake_hub
from helpers import ROOT, SHIPPED, make_model_folder, make_style_folder, patient_dicoms, running_app
from PIL import Image

import medgan.registry
import medgan.testing

README = (ROOT / "README.md").read_text()
DOC_URL, DOC_MODEL, DOC_STYLE = "http://127.0.0.1:7860", "brain-t1-dcgan-64", "brain-t1-style-64"
LEVELS = ("inferior", "lower", "middle", "upper", "superior")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return [re.sub(r"^ {3}", "", b, flags=re.M) for b in re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, re.S | re.M)]


def commands(title: str) -> list[list[str]]:
    """The command lines of a section's ```bash blocks, split as the shell would."""
    return [shlex.split(line) for b in blocks(section(title), "bash") for line in b.splitlines() if line.strip()]


def run_cli(argv: list[str], cwd: Path, extra: list[str] = (), env: dict[str, str] | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """A README command line (`python -m …`) in a subprocess in `cwd`, with `extra` arguments appended."""
    assert argv[:2] == ["python", "-m"], argv
    child = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, *argv[1:], *extra], cwd=cwd, env=child, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def model_setup(tmp_path_factory):
    """The README's model when shipped, else a tiny 64² stand-in under another id (the README's id substituted)."""
    weights = tmp_path_factory.mktemp("readme") / "weights"
    if DOC_STYLE not in SHIPPED:  # a tiny stand-in under the README's id, with the shipped model's classes
        make_style_folder(weights, DOC_STYLE, classes=LEVELS, resolution=64)
    env = {} if DOC_STYLE in SHIPPED else {"MEDGAN_WEIGHTS_DIRS": str(weights)}
    if DOC_MODEL in SHIPPED:
        return DOC_MODEL, env
    make_model_folder(weights, "readme-tiny", resolution=64, base_width=8)
    return "readme-tiny", {"MEDGAN_WEIGHTS_DIRS": str(weights)}


@pytest.mark.slow
def test_use_from_python_client_examples_run_against_the_app(model_setup):
    model_id, env = model_setup
    code = [b for b in blocks(section("Use from Python"), "python") if "gradio_client" in b]
    assert len(code) == 1
    source = code[0]
    with running_app(env={**env, "MEDGAN_MEDIGAN": "0"}) as app:
        namespace: dict = {}
        exec(compile(source.replace(DOC_URL, app.url).replace(DOC_MODEL, model_id), "README client", "exec"),
             namespace)
    # /models: "list of dicts: id, title, modality, organ, resolution, …"
    keys = {k.strip() for k in re.search(r"# list of dicts: ([\w, ]+)", source).group(1).split(",")} - {""}
    models = {m["id"]: m for m in namespace["models"]}
    assert model_id in models and keys <= set(models[model_id]) and len(keys) == 5
    assert models[model_id]["resolution"] == 64
    # /generate: [{"image": path, "caption": "SYNTHETIC · <model> · seed 42 · #0"}, …], count 4
    gallery = namespace["gallery"]
    shown = re.search(r'"caption": "([^"]+)"', source).group(1).replace(DOC_MODEL, model_id)
    assert len(gallery) == 4 and gallery[0]["caption"] == shown
    assert [set(g) for g in gallery] == [{"image", "caption"}] * 4
    with Image.open(gallery[0]["image"]) as img:
        assert img.format == "PNG" and img.size == (64, 64)
    # /download: ".../synthetic_<model>_seed42_n4_png_….zip" (PNGs + metadata.json + README.txt)
    prefix = re.search(r"/(synthetic_[^…]+)…\.zip", source).group(1).replace(DOC_MODEL, model_id)
    zip_path = Path(namespace["zip_path"])
    assert zip_path.name.startswith(prefix) and zip_path.suffix == ".zip"
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert {"metadata.json", "README.txt"} <= {Path(n).name for n in names}
    assert sum(n.endswith(".png") for n in names) == 4
    # /stats: the keys the README shows, for the model just used (aggregates only)
    if "/stats" in source:
        stats = namespace["stats"]
        shown = source.split('api_name="/stats")')[1].split("\n\n")[0]  # up to the next paragraph
        assert set(re.findall(r'"(\w+)": ', shown)) <= set(stats) and "history" not in stats
        assert stats["model"] == model_id and stats["loaded"] is True and stats["recent_images"] >= 4
    # steering, interpolation and mixing, as the comments say
    assert [g["caption"] for g in namespace["steered"]] == [
        f"SYNTHETIC · {DOC_STYLE} · seed 42 · #{i} · superior · ψ 0.7" for i in range(4)]
    assert len(namespace["frames"]) == 8 and namespace["frames"][0]["caption"] == f"SYNTHETIC · {DOC_STYLE} · 1→2 · t 0.00"
    with Image.open(namespace["gif_path"]) as gif:
        assert gif.n_frames == 8
    assert len(namespace["cells"]) == 12 and Path(namespace["grid_png"]).suffix == ".png"
    assert zipfile.is_zipfile(namespace["frames_zip"]) and zipfile.is_zipfile(namespace["cells_zip"])


def test_use_from_python_medgan_examples_run_locally(model_setup, monkeypatch, capsys):
    model_id, env = model_setup
    code = [b for b in blocks(section("Use from Python"), "python") if "import medgan" in b]
    assert len(code) == 1
    for key, value in {**env, "MEDGAN_MEDIGAN": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(medgan.registry, "_default", None)  # a registry that sees this environment
    namespace: dict = {}
    exec(compile(code[0].replace(DOC_MODEL, model_id), "README medgan", "exec"), namespace)
    monkeypatch.setattr(medgan.registry, "_default", None)
    assert any(line.startswith(f"{model_id} MR brain 64 local") for line in capsys.readouterr().out.splitlines())
    images, arrays = namespace["images"], namespace["arrays"]
    assert len(images) == 16 and all(isinstance(i, Image.Image) for i in images)
    shape = tuple(int(x) for x in re.search(r"# uint8 \[(\d+), (\d+), (\d+)\]", code[0]).groups())
    assert arrays.dtype.name == "uint8" and arrays.shape == shape
    style = namespace["style"]
    assert style.classes == list(LEVELS) and namespace["upper"].shape == (8, 64, 64)
    assert namespace["frames"].shape == (8, 64, 64) and namespace["grid"].shape == (3, 4, 64, 64)
    assert namespace["drawn"].shape == (8,)


def test_every_readme_code_block_is_one_these_tests_run():
    """A new example must join a test: each fenced block of README.md is one of those executed here or in
    tests/test_fast_route.py (the queue-free route)."""
    python, bash = blocks(README, "python"), blocks(README, "bash")
    assert len(re.findall(r"^ *```\w*\n.*?^ *```", README, re.S | re.M)) == len(python) + len(bash)  # nothing else
    assert sorted(python) == sorted(blocks(section("Use from Python"), "python")) and len(python) == 3
    assert sum("gradio_client" in b for b in python) == sum("import medgan" in b for b in python) == 1
    assert sum("/medgan/v1/generate.npz" in b for b in python) == 1
    run_here = ("Quick start", "Exports", "Train your own", "Publish a model and deploy the Space")
    assert sorted(bash) == sorted(b for title in run_here for b in blocks(section(title), "bash"))


def test_quick_start_is_what_ci_runs_and_what_the_tests_start():
    (block,) = blocks(section("Quick start"), "bash")
    test_command, start = block.splitlines()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == test_command == "bash tests/setup.sh && python -m pytest -q tests"
    assert start == "python app.py" and medgan.testing.APP == ROOT / "app.py"


@pytest.mark.slow
@pytest.mark.skipif("brain-t1-style-64" not in SHIPPED, reason="the README exports a shipped model")
def test_exports_command_runs(tmp_path):
    (argv,) = commands("Exports")
    run_cli(argv, tmp_path, ["--count", "16", "--shard-size", "8", "--workers", "1"])
    out = tmp_path / argv[argv.index("--out") + 1]
    assert (out / "manifest.csv").read_text().count("\n") == 17  # header + 16 images
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000", "shard-00001"]
    assert "SYNTHETIC" in (out / "README.txt").read_text()


@pytest.mark.slow
def test_train_your_own_commands_run_from_scans_to_an_evaluated_model(tmp_path):
    ingest, train, evaluate = commands("Train your own")
    assert [c[2] for c in (ingest, train, evaluate)] == ["training.data", "training.train", "training.evaluate"]
    patient_dicoms(tmp_path / ingest[3], [(f"P{i}", f"DOE^P{i}") for i in range(4)], per_patient=6)
    env = {"MEDGAN_CACHE_DIR": str(tmp_path / "cache")}
    run_cli(ingest, tmp_path, env=env)
    run_cli(train, tmp_path, ["--steps", "2", "--batch-size", "8", "--base-width", "4", "--d-width", "8",
                              "--threads", "1", "--sample-every", "1000"], env=env)
    folder = tmp_path / train[train.index("--export") + 1]
    assert medgan.Generator.from_folder(folder).generate(2, 0, output_type="np").shape == (2, 64, 64)
    run_cli(evaluate, tmp_path, ["--num", "16", "--batch", "16"], env=env)
    report = json.loads((folder / "eval.json").read_text())
    assert report["samples"]["n_synthetic"] == 16 and report["real_data"]["split"] == "subject"


@pytest.mark.slow
@pytest.mark.skipif("brain-t1-style-64" not in SHIPPED, reason="the README publishes a shipped model")
def test_publish_commands_run_against_a_fake_hub(tmp_path):
    """Run where the README runs them (a checkout: weights/<id>, weights/hub.json), in a copy of what they read."""
    shutil.copytree(ROOT / "weights" / "brain-t1-style-64", tmp_path / "weights" / "brain-t1-style-64",
                    ignore=shutil.ignore_patterns("discriminator.safetensors"))
    lines = commands("Publish a model and deploy the Space")
    assert [c[2] for c in lines] == ["training.push"] * 4
    assert all(c[c.index(flag) + 1].startswith("ORG/") for c in lines for flag in ("--repo", "--space") if flag in c)
    env = {"HF_HUB_OFFLINE": "", "HF_TOKEN": "hf_test_token"}  # uploads to the fake Hub; empty = not offline
    with fake_hub() as hub:
        for argv in lines:
            extra = [] if "--dry-run" in argv else ["--endpoint", hub.url]
            proc = run_cli(argv, tmp_path, extra, env=env)
            assert ("dry run: nothing uploaded" in proc.stdout) == ("--dry-run" in argv)
    assert [c.repo_id for c in hub.commits] == ["ORG/brain-t1-style-64", "ORG/medgan-studio"]
    catalogue = json.loads((tmp_path / "weights" / "hub.json").read_text())["models"]
    assert [(m["id"], m["repo_id"], m["revision"]) for m in catalogue] == [
        ("brain-t1-style-64-hub", "ORG/brain-t1-style-64", hub.commits[0].oid)]


def test_readme_is_short_and_links_every_docs_page():
    assert len(README.splitlines()) <= 250
    linked = set(re.findall(r"\]\((docs/[\w./-]+\.md)", README))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages and pages <= linked, sorted(pages - linked)
    assert all((ROOT / link).is_file() for link in linked), sorted(link for link in linked if not (ROOT / link).is_file())
