"""A real browser (Debian chromium via Playwright) on the Download tab: "dataset (parquet + card)" shows the
command line for larger counts (model, seed, ψ, class and count filled in, following the controls) and
downloads a zip that is a dataset repo: a card and a parquet file of synthetic rows."""
import io
import zipfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import ROOT, download_from, open_app, running_app, set_slider
from medgan import Generator
from medgan.config import ModelConfig

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STYLE = "brain-t1-style-64"


def command_text(page, expected_part: str) -> str:
    """The command box's text, once it contains `expected_part` (it follows the controls)."""
    page.wait_for_function("part => (document.querySelector('#dataset-command .cm-content') || {}).innerText"
                           "?.includes(part)", arg=expected_part, timeout=30_000)
    return page.locator("#dataset-command .cm-content").inner_text()


def test_dataset_option_shows_the_command_and_downloads_a_dataset(browser, tmp_path, artifacts_dir):
    with running_app() as app:
        page = open_app(browser, app.url, ModelConfig.load(ROOT / "weights" / STYLE).title)
        set_slider(page, "count", 5)
        set_slider(page, "seed", 9)
        page.locator("#class input").click()
        page.get_by_role("option", name="middle", exact=True).click()
        page.get_by_role("tab", name="Download").click()
        assert not page.locator("#dataset-cli").is_visible()  # png first: no dataset panel
        page.locator("#format").get_by_text("dataset (parquet + card)", exact=True).click()
        page.locator("#dataset-cli").wait_for(state="visible", timeout=30_000)
        text = command_text(page, "--class middle")
        assert text == (f"python -m medgan.dataset {STYLE} --count 10000 --out datasets/{STYLE}-seed9 --format "
                        "parquet --seed 9 --class middle")
        box = page.locator("#dataset-count input")
        box.fill("250000")
        box.press("Enter")
        assert "--count 250000 " in command_text(page, "--count 250000")
        page.screenshot(path=str(artifacts_dir / "download-dataset.png"), full_page=True)

        page.locator("#prepare-download").click()
        with zipfile.ZipFile(download_from(page, "archive", tmp_path / "dataset.zip")) as zf:
            assert sorted(zf.namelist()) == ["README.md", "data/train-00000-of-00001.parquet", "dataset.json"]
            assert "**Not for diagnosis.**" in zf.read("README.md").decode()
            table = pq.read_table(io.BytesIO(zf.read("data/train-00000-of-00001.parquet")))
        gen = Generator.from_folder(ROOT / "weights" / STYLE)
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(r["bytes"]))) for r in table.column("image").to_pylist()])
        assert np.array_equal(pixels, gen.generate(5, 9, label="middle", output_type="np"))
        assert table.column("synthetic").to_pylist() == [True] * 5

        page.locator("#format").get_by_text("png", exact=True).click()
        page.locator("#dataset-cli").wait_for(state="hidden", timeout=30_000)
        page.close()
