"""The app's first look in a real browser at 1280 px: it opens on the best-measured model with a one-line summary
that follows the dropdown, and no table on any tab breaks a word across lines. The screenshots come from
scripts/screenshots.py, the script that makes README.md's, so that script is exercised too."""
import pytest
from PIL import Image

from helpers import SHIPPED, running_app
from medgan import service
from scripts import screenshots

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.mark.skipif(not SHIPPED, reason="no shipped models in weights/")
def test_first_look_default_model_summary_and_unbroken_table_words(browser, tmp_path, artifacts_dir):
    default = service.default_model()
    others = [m.id for m in service.models() if m.source == "local" and m.generatable and m.id != default]
    with running_app({"MEDGAN_MEDIGAN_HOME": str(tmp_path / "empty-medigan-home")}) as app:
        page = browser.new_page(viewport={"width": screenshots.WIDTH, "height": screenshots.HEIGHT})
        page.goto(app.url)
        page.wait_for_selector("#generate")
        summary = page.locator("#model-summary")
        assert f"({default})" in summary.inner_text() and "FID" in summary.inner_text()
        assert page.locator("#model input").input_value() == next(label for label, i in service.model_choices()
                                                                  if i == default)
        other = next(m for m in service.models() if m.id == others[0])
        page.locator("#model input").click()
        page.get_by_role("option").filter(has_text=other.label()).first.click()
        page.wait_for_function("m => document.querySelector('#model-summary').innerText.includes(m)",
                               arg=f"({other.id})", timeout=30_000)
        # the check sees a broken word: a 40-px column that may split words splits "Resolution"
        before = screenshots.broken_words(page)
        page.evaluate("""() => document.body.insertAdjacentHTML('beforeend', '<div style="width:40px"><table><tr>'
                      + '<td style="overflow-wrap:anywhere">Resolution</td></tr></table></div>')""")
        assert screenshots.broken_words(page) == [*before, "Resolution"]
        page.close()

        broken = screenshots.shoot(browser, app.url, artifacts_dir / "screenshots")
    assert broken == {tab: [] for tab in screenshots.TABS}
    for tab in screenshots.TABS:
        with Image.open(artifacts_dir / "screenshots" / f"{tab}.png") as shot:
            assert shot.width == screenshots.WIDTH and shot.height >= screenshots.HEIGHT
