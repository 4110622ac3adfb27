"""Test environment: offline, no analytics, temp dirs, CPU. Set before anything imports gradio, huggingface_hub
or medgan. Tests write nothing into the source tree: figures and screenshots go to the `artifacts_dir` fixture,
Hypothesis' example database to the pytest cache."""
import os
import shutil
import tempfile

_TMP = tempfile.mkdtemp(prefix="medgan-tests-")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# Pixel references (reference DCGAN, medigan packages, byte-identical runs) and device assertions are CPU ones;
# pinned here so a machine with a GPU runs the same suite. App subprocesses inherit it.
os.environ["MEDGAN_DEVICE"] = "cpu"
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
from medgan.testing import CHROMIUM_ARGS  # noqa: E402


@pytest.fixture
def tiny_model(tmp_path):
    """A folder `weights/tiny-test` holding a small random DCGAN (32², widths 32-16-8)."""
    return make_model_folder(tmp_path / "weights", "tiny-test")


def pytest_configure(config):
    """Hypothesis' storage (example database, unicode tables) in the pytest cache, not `.hypothesis/` in the
    working directory."""
    cache = getattr(config, "cache", None)
    home = Path(cache.mkdir("hypothesis")) if cache is not None else Path(_TMP) / "hypothesis"
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(home))
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:  # older Hypothesis: the environment variable above is all there is
        return
    set_hypothesis_home_dir(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"])


@pytest.fixture(scope="session")
def artifacts_dir(request, tmp_path_factory) -> Path:
    """Where tests leave figures and screenshots for people to read: $MEDGAN_TEST_ARTIFACTS if set, else the
    pytest cache (`.pytest_cache/d/artifacts/`), else this pytest session's temp dir. Never `tests/`."""
    if os.environ.get("MEDGAN_TEST_ARTIFACTS"):
        path = Path(os.environ["MEDGAN_TEST_ARTIFACTS"])
        path.mkdir(parents=True, exist_ok=True)
        return path
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("artifacts")) if cache is not None else tmp_path_factory.mktemp("artifacts")


# Debian's chromium, driven by PyPI playwright (never `playwright install`), with medgan.testing.CHROMIUM_ARGS.
# MEDGAN_TEST_CHROMIUM names another build. Missing: the browser tests skip, saying why, except in CI (CI=true),
# where they fail, so a CI image without a browser cannot pass silently.
def chromium_path() -> str | None:
    wanted = os.environ.get("MEDGAN_TEST_CHROMIUM", "").strip()
    if wanted:
        return wanted if os.path.isfile(wanted) and os.access(wanted, os.X_OK) else None
    return next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and os.path.isfile(p) and os.access(p, os.X_OK)), None)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def no_browser(reason: str):
    """Fail in CI, skip elsewhere; both with the reason and the fix."""
    message = (f"{reason}; install Debian's chromium (`bash tests/setup.sh` as root) or set MEDGAN_TEST_CHROMIUM "
               "to a chromium executable")
    if in_ci():
        pytest.fail(f"browser tests cannot run in CI: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        wanted = os.environ.get("MEDGAN_TEST_CHROMIUM", "").strip()
        no_browser(f"no chromium executable at {wanted!r}" if wanted else
                   "no chromium found (/usr/bin/chromium, or `chromium` on PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("the playwright package is not installed (pip install -r requirements-test.txt)")

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()
