"""A real browser (Debian chromium via Playwright) drives the app: pick a model, generate, download the zip."""
import json
import zipfile

import pytest

from helpers import SHIPPED, download_from, make_model_folder, open_app, running_app, set_slider

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def model_label(model_id: str) -> str:
    """The dropdown shows labels (title · modality · organ · size), not ids."""
    import medgan
    return next(m.label() for m in medgan.list_models() if m.id == model_id)


def wait_for_gallery(page, count: int) -> None:
    page.wait_for_function(
        """n => { const imgs = [...document.querySelectorAll('#gallery .thumbnail-item img')];
                  return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=count, timeout=30_000)


def test_generate_and_download_in_a_real_browser(browser, tmp_path, artifacts_dir):
    extra = tmp_path / "weights"
    make_model_folder(extra, "tiny-test")
    model_id = SHIPPED[0] if SHIPPED else "tiny-test"
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(extra)}) as app:
        page = open_app(browser, app.url, model_label(model_id))
        assert "not for diagnosis" in page.locator("#synthetic-notice").inner_text()
        set_slider(page, "count", 6)
        set_slider(page, "seed", 7)
        page.locator("#generate").click()
        wait_for_gallery(page, 6)
        assert model_id in page.locator("#model-info").inner_text()
        page.screenshot(path=str(artifacts_dir / "generate.png"), full_page=True)

        page.get_by_role("tab", name="Download").click()
        page.locator("#prepare-download").click()
        with zipfile.ZipFile(download_from(page, "archive", tmp_path / "batch.zip")) as zf:
            meta = json.loads(zf.read("metadata.json"))
            assert meta["synthetic"] is True and meta["model"] == model_id and meta["seed"] == 7
            assert len([n for n in zf.namelist() if n.endswith(".png")]) == 6

        page.get_by_role("tab", name="Models").click()
        page.wait_for_selector("#models-table")
        assert model_id in page.locator("#models-table").inner_text()
        page.close()
