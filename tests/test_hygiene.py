"""The suite itself: it writes nothing into the source tree, runs on the CPU whatever the machine has, says why
the browser tests did not run (and fails in CI instead), and has a fast tier (`-m "not slow"`)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import conftest
from helpers import ROOT


def test_artifacts_are_kept_out_of_the_tests_folder(artifacts_dir):
    assert artifacts_dir.is_dir() and not artifacts_dir.resolve().is_relative_to(ROOT / "tests")
    for path in sorted((ROOT / "tests").glob("*.py")):  # nothing builds the old tests/artifacts path again
        assert not re.search(r"""/\s*["']artifacts["']""", path.read_text()), path.name


def test_hypothesis_keeps_its_files_out_of_the_working_tree():
    home = Path(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"]).resolve()
    assert home != (Path.cwd() / ".hypothesis").resolve() and not home.is_relative_to(ROOT / "tests")


def test_device_is_pinned_to_the_cpu():
    """Pixel references and device assertions are CPU ones; a GPU machine must not change what is compared."""
    from medgan.generator import default_device
    assert os.environ["MEDGAN_DEVICE"] == "cpu" and default_device().type == "cpu"


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDGAN_TEST_CHROMIUM", str(tmp_path / "no-chromium"))
    assert conftest.chromium_path() is None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium here; install .* or set MEDGAN_TEST_CHROMIUM"):
        conftest.no_browser("no chromium here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="browser tests cannot run in CI: no chromium here"):
        conftest.no_browser("no chromium here")
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MEDGAN_TEST_CHROMIUM", str(fake))
    assert conftest.chromium_path() == str(fake)


def test_markers_are_registered(pytestconfig):
    names = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert {"slow", "browser"} <= names
