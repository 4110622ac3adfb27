"""End to end: `python app.py` in a subprocess, called through gradio_client on every API name."""
import json
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client
from PIL import Image

from helpers import SHIPPED, make_model_folder, running_app

pytestmark = pytest.mark.slow  # every test here starts the app

MODELS = ["tiny-test", *SHIPPED]


@pytest.fixture(scope="module")
def extra_weights(tmp_path_factory):
    parent = tmp_path_factory.mktemp("weights")
    make_model_folder(parent, "tiny-test")
    return parent


def call_generate(url: str, model: str, seed: int, count: int, out: Path) -> list[bytes]:
    client = Client(url, download_files=str(out), verbose=False)
    result = client.predict(model, seed, count, api_name="/generate")
    # conditional models add the class drawn for each image: " · <class>"
    assert [r["caption"].split(" · ")[:4] for r in result] == [["SYNTHETIC", model, f"seed {seed}", f"#{i}"]
                                                              for i in range(count)]
    return [Path(r["image"]).read_bytes() for r in result]


def test_all_api_names_for_every_model_and_byte_identical_across_runs(extra_weights, tmp_path):
    env = {"MEDGAN_WEIGHTS_DIRS": str(extra_weights)}
    first: dict[str, list[bytes]] = {}
    with running_app(env) as app:
        client = Client(app.url, download_files=str(tmp_path / "dl"), verbose=False)
        listing = client.predict(api_name="/models")
        ids = [m["id"] for m in listing]
        assert set(MODELS) <= set(ids)
        for m in listing:
            assert {"id", "title", "modality", "organ", "resolution", "source", "license", "metrics"} <= set(m)
        for model in MODELS:
            first[model] = call_generate(app.url, model, 1234, 3, tmp_path / "a")
            res = next(m["resolution"] for m in listing if m["id"] == model)
            for data in first[model]:
                image = Image.open(__import__("io").BytesIO(data))
                assert image.format == "PNG" and image.size == (res, res)
                assert image.text["Synthetic"] == "true" and image.text["Model"] == model
            zip_path = client.predict(model, 1234, 3, "png", False, api_name="/download")
            with zipfile.ZipFile(zip_path) as zf:
                names = zf.namelist()
                pngs = [n for n in names if n.endswith(".png")]
                assert len(pngs) == 3 and "metadata.json" in names and "README.txt" in names
                meta = json.loads(zf.read("metadata.json"))
                assert meta["synthetic"] is True and meta["model"] == model and meta["seed"] == 1234
                assert [f["index"] for f in meta["files"]] == [0, 1, 2] and meta["app_version"]
                assert all(n.startswith("synthetic_") for n in pngs)
                # The zip's pixels are the gallery's pixels.
                for i, name in enumerate(sorted(pngs)):
                    z = Image.open(zf.open(name))
                    g = Image.open(__import__("io").BytesIO(first[model][i]))
                    assert z.tobytes() == g.tobytes()
    with running_app(env) as app:
        for model in MODELS:
            assert call_generate(app.url, model, 1234, 3, tmp_path / "b") == first[model]
        # prefix property through the API
        assert call_generate(app.url, MODELS[0], 1234, 1, tmp_path / "c") == first[MODELS[0]][:1]


def test_errors_are_clear_and_server_keeps_serving(extra_weights, tmp_path):
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(extra_weights)}) as app:
        client = Client(app.url, download_files=str(tmp_path), verbose=False)
        with pytest.raises(Exception, match="Unknown model id '../../etc/passwd'") as err:
            client.predict("../../etc/passwd", 1, 2, api_name="/generate")
        assert "Traceback" not in str(err.value) and str(app.url) not in str(err.value)
        with pytest.raises(Exception, match="'bmp'.*(not in the list of choices|unknown format)|unknown format 'bmp'"):
            client.predict("tiny-test", 1, 2, "bmp", False, api_name="/download")
        assert len(client.predict("tiny-test", 1, 2, api_name="/generate")) == 2
