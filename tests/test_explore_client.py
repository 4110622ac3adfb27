"""The latent controls through the app's API (gradio_client): /generate's new inputs (and its old 3-argument
form), /interpolate, /mix, their downloads, and bad input named by field."""
import json
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client
from PIL import Image

from helpers import SHIPPED_DCGAN, make_style_folder, running_app

pytestmark = pytest.mark.slow  # starts the app


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights")
    make_style_folder(weights, "style-tiny")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights)}) as proc:
        yield proc


@pytest.fixture
def client(app, tmp_path):
    return Client(app.url, download_files=str(tmp_path), verbose=False)


def test_generate_keeps_its_three_argument_form_and_takes_truncation_and_class(client):
    old = client.predict(SHIPPED_DCGAN, 7, 2, api_name="/generate")
    assert [r["caption"] for r in old] == [f"SYNTHETIC · {SHIPPED_DCGAN} · seed 7 · #{i}" for i in range(2)]
    drawn = client.predict("style-tiny", 7, 3, api_name="/generate")
    assert all(r["caption"].split(" · ")[4] in ("dark", "bright") for r in drawn)
    fixed = client.predict("style-tiny", 7, 3, 0.6, "bright", api_name="/generate")
    assert [r["caption"] for r in fixed] == [f"SYNTHETIC · style-tiny · seed 7 · #{i} · bright · ψ 0.6" for i in range(3)]
    with Image.open(fixed[0]["image"]) as image:
        assert image.info.get("Class") == "bright" and image.info.get("Synthetic") == "true"
    classes = next(m["classes"] for m in client.predict(api_name="/models") if m["id"] == "style-tiny")
    assert classes == ["dark", "bright"]


def test_interpolate_returns_filmstrip_gif_and_zip(client):
    frames, gif, archive = client.predict("style-tiny", 3, 9, 6, 1.0, "any", api_name="/interpolate")
    assert len(frames) == 6 and frames[0]["caption"].startswith("SYNTHETIC · style-tiny · 3→9 · t 0.00")
    with Image.open(gif) as animation:
        assert animation.n_frames == 6 and b"SYNTHETIC" in animation.info.get("comment", b"")
    with zipfile.ZipFile(archive) as zf:
        meta = json.loads(zf.read("metadata.json"))
    assert [f["t"] for f in meta["files"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert meta["interpolation"]["seed_a"] == 3 and meta["files"][0]["class"] in ("dark", "bright")
    assert Path(gif).name.startswith("synthetic_") and Path(archive).name.startswith("synthetic_")


def test_mix_returns_a_grid_with_header_row_and_column(client):
    figure, cells, archive = client.predict("style-tiny", "1, 2", "3, 4, 5", 2, 1.0, "dark", api_name="/mix")
    with Image.open(figure) as image:
        # (1 + 3 columns) x (1 + 2 rows) tiles of 32 px with 2 px padding
        assert image.size == (4 * 34 + 2, 3 * 34 + 2) and "SYNTHETIC" in image.info.get("Description", "")
    assert len(cells) == 6 and cells[0]["caption"] == "SYNTHETIC · style-tiny · coarse 1 × fine 3"
    with zipfile.ZipFile(archive) as zf:
        meta = json.loads(zf.read("metadata.json"))
    assert meta["style_mixing"]["crossover"] == 2 and meta["files"][5]["row_seed"] == 2
    assert {f["class"] for f in meta["files"]} == {"dark"}


@pytest.mark.parametrize("api, args, field", [
    ("/generate", ("style-tiny", 1, 1, "NaN", "any"), "truncation"),  # JSON has no NaN: as text
    ("/generate", ("style-tiny", 1, 1, -0.5, "any"), "truncation"),
    ("/generate", ("style-tiny", 1, 1, 2.5, "any"), "truncation"),
    ("/generate", ("style-tiny", 1, 1, 1.0, "grey"), "unknown class"),
    ("/interpolate", ("style-tiny", 1, 2, 0, 1.0, "any"), "frames"),
    ("/interpolate", ("style-tiny", 1, 2, 10**6, 1.0, "any"), "frames"),
    ("/mix", ("style-tiny", "1, x", "2", 2, 1.0, "any"), "row_seeds"),
    ("/mix", ("style-tiny", "1", ", ".join(map(str, range(9))), 2, 1.0, "any"), "col_seeds"),
    ("/mix", ("style-tiny", "1", "2", 9, 1.0, "any"), "crossover"),
    ("/mix", (SHIPPED_DCGAN, "1", "2", 2, 1.0, "any"), "DCGAN"),
])
def test_bad_input_is_named(client, api, args, field):
    with pytest.raises(Exception, match=field):
        client.predict(*args, api_name=api)
