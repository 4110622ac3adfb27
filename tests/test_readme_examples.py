"""README.md examples are executed: the ```python blocks of "Use from Python" against a running app (client) and
in-process (medgan), checking the structures the README shows; the commands of "Publish a model and deploy the
Space" must parse with the real CLIs."""
from __future__ import annotations

import re
import shlex
import shutil
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, SHIPPED, make_model_folder, make_style_folder, running_app
from PIL import Image

import medgan.registry

README = (ROOT / "README.md").read_text()
DOC_URL, DOC_MODEL, DOC_STYLE = "http://127.0.0.1:7860", "brain-t1-dcgan-64", "brain-t1-style-64"
LEVELS = ("inferior", "lower", "middle", "upper", "superior")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return [re.sub(r"^ {3}", "", b, flags=re.M) for b in re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, re.S | re.M)]


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
    # /stats: the keys the README shows, for the model just used
    if "/stats" in source:
        stats = namespace["stats"]
        shown = source.split('api_name="/stats")')[1].split("\n\n")[0]  # up to the next paragraph
        history_keys = set(re.findall(r'"(\w+)": ', re.search(r'"history": \[\{(.*?)\}', shown).group(1)))
        assert set(re.findall(r'"(\w+)": ', shown)) - history_keys <= set(stats)
        assert stats["model"] == model_id and stats["loaded"] is True
        assert history_keys <= set(stats["history"][-1]) and stats["history"][-1]["count"] == 4
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


def test_publish_section_commands_parse_with_the_real_clis():
    from training import evaluate, push, train

    text = section("Publish a model and deploy the Space")
    commands = [shlex.split(line) for b in blocks(text, "bash") for line in b.splitlines() if line.strip()]
    seen = set()
    for argv in commands:
        if argv[:2] == ["python", "-m"]:
            module, args = argv[2], argv[3:]
            seen.add(module)
            if module == "training.train":
                parsed = train.build_parser().parse_args(args)
                assert parsed.export == "weights/brain-t1-dcgan-64"
            elif module == "training.evaluate":
                assert evaluate.parse_args(args).model == "weights/brain-t1-dcgan-64"
            elif module == "training.push":
                parsed = push.parse_args(args)
                assert (parsed.repo or parsed.space).startswith("ORG/")
            else:
                pytest.fail(f"README runs an untested module: {module}")
        else:
            assert argv[0] == "git", argv
    assert seen == {"training.train", "training.evaluate", "training.push"}
    # the push step writes the catalogue the commit step adds, and the Space step reads it
    assert "--catalogue weights/hub.json" in text and "git add weights/hub.json" in text
    assert shutil.which("hf") or shutil.which("huggingface-cli")  # `hf auth login` is available
