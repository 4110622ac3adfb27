"""Test environment: offline, no analytics, temp dirs. Set before anything imports gradio or huggingface_hub."""
import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="medgan-tests-")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_TEMP_DIR"] = os.path.join(_TMP, "gradio")
os.environ["MEDGAN_EXPORT_DIR"] = os.path.join(_TMP, "exports")
os.environ.setdefault("MEDGAN_CACHE_DIR", os.path.join(_TMP, "cache"))
os.environ["MPLBACKEND"] = "Agg"

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import make_model_folder  # noqa: E402


@pytest.fixture
def tiny_model(tmp_path):
    """A folder `weights/tiny-test` holding a small random DCGAN (32², widths 32-16-8)."""
    return make_model_folder(tmp_path / "weights", "tiny-test")


# Debian's chromium, driven by PyPI playwright (never `playwright install`): flags keep it off the network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
