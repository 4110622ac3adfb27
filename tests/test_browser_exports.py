"""A real browser (Debian chromium via Playwright) downloads the DICOM zip from the Download tab, with and
without the burnt-in SYNTHETIC label, and pydicom reads every file."""
import io
import zipfile

import numpy as np
import pydicom
import pytest

from helpers import make_model_folder, open_app, running_app, set_slider

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def download_zip(page, path, previous_href: str | None) -> tuple[str, list[pydicom.Dataset]]:
    page.locator("#prepare-download").click()
    link = page.locator("#archive a").first
    link.wait_for(timeout=30_000)
    page.wait_for_function("prev => { const a = document.querySelector('#archive a');"
                           " return a && a.getAttribute('href') !== prev; }", arg=previous_href, timeout=30_000)
    href = link.get_attribute("href")
    with page.expect_download() as dl:
        link.click()
    dl.value.save_as(path)
    with zipfile.ZipFile(path) as zf:
        assert {"metadata.json", "README.txt"} <= set(zf.namelist())
        names = sorted(n for n in zf.namelist() if n.endswith(".dcm"))
        return href, [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names]


def test_download_dicom_series_from_the_ui(browser, tmp_path):
    extra = tmp_path / "weights"
    make_model_folder(extra, "tiny-test")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(extra)}) as app:
        page = open_app(browser, app.url, "tiny-test")
        set_slider(page, "count", 3)
        set_slider(page, "seed", 5)
        page.get_by_role("tab", name="Download").click()
        page.locator("#format").get_by_text("dicom", exact=True).click()
        assert page.locator("#format input[value=dicom]").is_checked()
        assert not page.locator("#label input").is_checked()  # the label is off by default

        href, plain = download_zip(page, tmp_path / "plain.zip", None)
        assert len(plain) == 3 and [ds.InstanceNumber for ds in plain] == [1, 2, 3]
        assert len({ds.SeriesInstanceUID for ds in plain}) == 1
        for ds in plain:
            assert ds.PatientName == "SYNTHETIC^MEDGAN" and ds.BurnedInAnnotation == "NO"
            assert "SYNTHETIC" in ds.SeriesDescription and "tiny-test seed 5" in ds.ImageComments
            assert ds.pixel_array.shape == (32, 32)

        page.locator("#label input").check()
        _, marked = download_zip(page, tmp_path / "marked.zip", href)
        assert [ds.BurnedInAnnotation for ds in marked] == ["YES"] * 3
        for a, b in zip(plain, marked):
            rows, _ = np.nonzero(a.pixel_array != b.pixel_array)
            assert len(rows) > 0 and rows.min() >= 0.7 * 32  # only the bottom corner changed
        page.close()
