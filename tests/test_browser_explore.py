"""A real browser drives the latent controls: truncation and class on the Generate tab change the gallery; the
Explore tab's interpolation (filmstrip + GIF download with the right frame count) and style-mixing grid."""
import io

import pytest
from PIL import Image

from helpers import download_from, make_style_folder, open_app, running_app, set_slider
from test_browser import wait_for_gallery

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def gallery_sources(page, elem_id: str) -> list[str]:
    return page.eval_on_selector_all(f"#{elem_id} .thumbnail-item img", "imgs => imgs.map(i => i.src)")


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def image_bytes(page, sources: list[str]) -> list[bytes]:
    """The pixels of each image (PNG text differs per image: seed, index)."""
    out = []
    for src in sources:
        with Image.open(io.BytesIO(page.request.get(src).body())) as image:
            out.append(image.tobytes())
    return out


def test_truncation_class_and_explore_tab_in_a_real_browser(browser, tmp_path, artifacts_dir):
    weights = tmp_path / "weights"
    make_style_folder(weights, "style-ui", resolution=64)
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights)}) as app:
        page = open_app(browser, app.url, "Tiny style style-ui", width=1400, height=1000)
        page.locator("#class").wait_for(state="visible", timeout=30_000)  # shown: the model has classes
        set_slider(page, "count", 4)
        page.locator("#generate").click()
        wait_for_gallery(page, 4)
        before = image_bytes(page, gallery_sources(page, "gallery"))
        set_slider(page, "truncation", 0)
        pick(page, "class", "bright")
        page.locator("#generate").click()
        page.wait_for_function("() => document.querySelector('#gallery').innerText.includes('bright · ψ 0.0')",
                               timeout=30_000)  # only the new captions say ψ
        wait_for_gallery(page, 4)
        after = image_bytes(page, gallery_sources(page, "gallery"))
        assert after != before
        assert len(set(after)) == 1  # ψ = 0 and one class: every image is that class's mean image

        page.get_by_role("tab", name="Explore").click()
        set_slider(page, "frames", 6)
        page.locator("#interpolate").click()
        page.wait_for_function(
            "() => document.querySelectorAll('#filmstrip .thumbnail-item img').length === 6", timeout=60_000)
        with Image.open(download_from(page, "gif", tmp_path / "frames.gif")) as animation:
            assert animation.format == "GIF" and animation.n_frames == 6

        page.locator("#row-seeds textarea, #row-seeds input").first.fill("1, 2")
        page.locator("#col-seeds textarea, #col-seeds input").first.fill("3, 4, 5")
        set_slider(page, "crossover", 2)
        page.locator("#mix").click()
        page.wait_for_selector("#mix-grid img", timeout=60_000)
        src = page.locator("#mix-grid img").first.get_attribute("src")
        with Image.open(io.BytesIO(page.request.get(src).body())) as grid:
            assert grid.size == (4 * 66 + 2, 3 * 66 + 2)  # (1 + 3) x (1 + 2) tiles of 64 px, 2 px apart
        page.screenshot(path=str(artifacts_dir / "explore.png"), full_page=True)
        page.close()
