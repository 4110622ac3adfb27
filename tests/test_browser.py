"""A real browser (Debian chromium via Playwright) drives the app: pick a model, generate, download the zip;
browse the Models tab with a filter."""
import json
import zipfile

import pytest

from helpers import SHIPPED, download_from, make_model_folder, open_app, running_app, set_slider, wait_for_images

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def model_label(model_id: str) -> str:
    """The dropdown shows labels (title · modality · organ · size), not ids."""
    import medgan
    return next(m.label() for m in medgan.list_models() if m.id == model_id)


def wait_for_gallery(page, count: int) -> None:
    wait_for_images(page, "gallery", count)


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


def test_models_tab_filters_the_zoo_in_a_real_browser(browser, tmp_path, artifacts_dir):
    """Offline with an empty medigan home: the table lists our models and medigan's 23 (the shipped snapshot);
    the source filter narrows it to the local ones, with their sample thumbnails and a detail card."""
    home = tmp_path / "empty-medigan-home"
    with running_app({"MEDGAN_MEDIGAN_HOME": str(home)}) as app:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(app.url)
        page.get_by_role("tab", name="Models").click()
        table = page.locator("#models-table")
        table.wait_for()
        total = len(SHIPPED) + 23
        page.wait_for_function("t => document.querySelector('#models-count').innerText.includes(t)",
                               arg=f"{total} of {total} models", timeout=30_000)  # after the page's load event
        assert "medigan:00001_DCGAN_MMG_CALC_ROI" in table.inner_text()
        page.locator("#filter-source input").click()
        page.get_by_role("option", name="local", exact=True).click()
        page.wait_for_function("n => document.querySelector('#models-count').innerText.startsWith(n + ' of')",
                               arg=str(len(SHIPPED)), timeout=30_000)
        text = table.inner_text()
        assert "medigan:" not in text and all(m in text for m in SHIPPED)
        page.wait_for_function(
            """n => { const imgs = [...document.querySelectorAll('#model-samples .thumbnail-item img')];
                      return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
            arg=len(SHIPPED), timeout=30_000)
        detail = page.locator("#model-detail")
        page.wait_for_function("() => document.querySelector('#model-detail').innerText.includes('Subjects')",
                               timeout=30_000)
        assert SHIPPED[0] in detail.inner_text() and "Model licence" in detail.inner_text()
        table.get_by_text(SHIPPED[-1], exact=True).first.click()  # a row picks the model shown in the panel
        page.wait_for_function("m => document.querySelector('#model-detail').innerText.includes(m)",
                               arg=SHIPPED[-1], timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "models-filtered.png"), full_page=True)
        assert not home.exists()  # browsing writes nothing into the medigan home
        page.close()
