"""Screenshots of every tab of the app, as README.md shows them: `python -m scripts.screenshots`.

Starts `python app.py` on a free 127.0.0.1 port over the shipped models (offline: no analytics, no Hub), drives
Debian's chromium (`--chromium`, default /usr/bin/chromium) through Playwright at 1280 px (the Python package
only; never `playwright install`), and writes generate.png, download.png, explore.png, models.png and
performance.png to `--out` (default docs/screenshots), as 256-colour PNGs. It also reports any word that a table
of a tab breaks across two lines; tests/test_browser_layout.py runs the same code and fails on one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

from medgan.testing import CHROMIUM_ARGS, ROOT, running_app

WIDTH, HEIGHT = 1280, 900
TABS = ("generate", "download", "explore", "models", "performance")
WAIT_MS = 60_000

# Every table cell (Markdown tables and the Models table) on screen: a run of letters or digits whose text
# spans two line boxes is a word broken mid-word. Breaks at spaces, hyphens and slashes are line breaks.
BROKEN_WORDS_JS = """
() => {
  const broken = [];
  for (const cell of document.querySelectorAll('th, td')) {
    if (!cell.offsetParent) continue;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const match of node.data.matchAll(/[\\p{L}\\p{N}_]+/gu)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (lines.size > 1) broken.push(match[0]);
      }
    }
  }
  return broken;
}
"""


def set_slider(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_for_images(page, elem_id: str, count: int) -> None:
    """Until the gallery `elem_id` shows exactly `count` images, each loaded."""
    page.wait_for_function(
        """([id, n]) => { const imgs = [...document.querySelectorAll(`#${id} .thumbnail-item img`)];
                          return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=[elem_id, count], timeout=WAIT_MS)


def broken_words(page) -> list[str]:
    return page.evaluate(BROKEN_WORDS_JS)


def _generate(page) -> None:
    set_slider(page, "count", 8)
    for seed in (7, 19, 42):  # three calls: the Performance tab's plot has a line to show
        set_slider(page, "seed", seed)
        page.locator("#generate").click()
        page.wait_for_function("s => document.querySelector('#gallery').innerText.includes(s)",
                               arg=f"seed {seed} ·", timeout=WAIT_MS)
        wait_for_images(page, "gallery", 8)


def _download(page) -> None:
    page.get_by_role("tab", name="Download").click()
    page.locator("#prepare-download").click()
    page.locator("#archive a").first.wait_for(timeout=WAIT_MS)


def _explore(page) -> None:
    page.get_by_role("tab", name="Explore").click()
    page.locator("#seed-a input").fill("3")
    page.locator("#seed-b input").fill("11")
    page.locator("#interpolate").click()
    wait_for_images(page, "filmstrip", 8)
    page.locator("#mix").click()
    page.wait_for_function("() => { const i = document.querySelector('#mix-grid img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=WAIT_MS)


def _models(page) -> None:
    page.get_by_role("tab", name="Models").click()
    page.locator("#filter-source input").click()
    page.get_by_role("option", name="local", exact=True).click()
    page.wait_for_function("() => !document.querySelector('#models-table').innerText.includes('medigan:')",
                           timeout=WAIT_MS)
    page.wait_for_function("() => document.querySelector('#model-detail').innerText.includes('Subjects')",
                           timeout=WAIT_MS)
    # every listed model's thumbnail loaded
    page.wait_for_function(
        """() => { const n = parseInt(document.querySelector('#models-count').innerText);
                   const imgs = [...document.querySelectorAll('#model-samples .thumbnail-item img')];
                   return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        timeout=WAIT_MS)


def _performance(page) -> None:
    page.get_by_role("tab", name="Performance").click()
    page.wait_for_function("() => document.querySelector('#perf-summary').innerText.includes('images/s')",
                           timeout=WAIT_MS)
    page.locator("#perf-plot canvas, #perf-plot svg").first.wait_for(timeout=WAIT_MS)


STEPS = {"generate": _generate, "download": _download, "explore": _explore, "models": _models,
         "performance": _performance}


def save(page, path: Path, full_page: bool) -> Path:
    """The page as a 256-colour PNG: the UI's few colours and the grey slices fit in a palette."""
    page.screenshot(path=str(path), full_page=full_page)
    with Image.open(path) as shot:
        shot.convert("RGB").quantize(256).save(path, optimize=True)
    return path


def shoot(browser, url: str, out: Path) -> dict[str, list[str]]:
    """Every tab in TABS order, on one page of `browser` at WIDTH × HEIGHT: a screenshot each in `out`.
    Returns the words a table breaks, per tab."""
    out.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=True)
    try:
        page.goto(url)
        page.wait_for_selector("#generate")
        broken = {}
        for tab in TABS:
            STEPS[tab](page)
            page.wait_for_function("() => !document.querySelector('.pending')", timeout=WAIT_MS)  # none faded
            broken[tab] = broken_words(page)
            save(page, out / f"{tab}.png", full_page=tab == "explore")
        return broken
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.screenshots", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder for the PNGs")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="chromium executable (Debian's by default)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    env = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "MEDGAN_DEVICE": "cpu",
           "GRADIO_TEMP_DIR": tempfile.mkdtemp(prefix="medgan-screenshots-")}
    with running_app(env) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            broken = shoot(browser, app.url, Path(args.out))
        finally:
            browser.close()
    for tab in TABS:
        print(f"{Path(args.out) / tab}.png" + (f"  broken words: {', '.join(broken[tab])}" if broken[tab] else ""))
    return 1 if any(broken.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
