"""Settings and serving limits: every numeric MEDGAN_* variable goes through one parser (medgan.limits.env_number)
and a malformed one is a ConfigError naming it, at start-up; Gradio's upload route is capped (also when a
runner launches `demo` itself); a refused request logs one line, an unexpected error its traceback."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from helpers import ROOT, free_port, make_model_folder, running_app
from medgan import ConfigError, Registry, limits
from medgan.sources import medigan as medigan_source
from medgan.validation import check_count

MALFORMED = ["abc", "٣", "４２", "1_000", "0x10", "nan", "inf", "1e999", "--1", "1 2", "x" * 100]


# --- the one parser ------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", MALFORMED)
def test_env_number_takes_ascii_decimal_notation_only(monkeypatch, raw):
    monkeypatch.setenv("MEDGAN_TEST_NUMBER", raw)
    for integer in (True, False):
        with pytest.raises(ConfigError, match=r"^MEDGAN_TEST_NUMBER must be an? (integer|number) >= 0, got '"):
            limits.env_number("MEDGAN_TEST_NUMBER", 5, integer=integer)


@pytest.mark.parametrize("raw,integer,want", [
    ("", True, 5), ("  ", True, 5), (" 7 ", True, 7), ("+7", True, 7), ("007", True, 7),
    ("2.5", False, 2.5), (".5", False, 0.5), ("3.", False, 3.0), ("1e3", False, 1000.0), ("12", False, 12.0)])
def test_env_number_reads_good_values_and_defaults(monkeypatch, raw, integer, want):
    monkeypatch.setenv("MEDGAN_TEST_NUMBER", raw)
    got = limits.env_number("MEDGAN_TEST_NUMBER", 5, integer=integer)
    assert got == want and type(got) is (int if integer else float)


@pytest.mark.parametrize("raw", ["2.5", "0", "11", "-3"])
def test_env_number_bounds(monkeypatch, raw):
    monkeypatch.setenv("MEDGAN_TEST_NUMBER", raw)
    message = f"MEDGAN_TEST_NUMBER must be an integer between 1 and 10, got '{raw}'"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        limits.env_number("MEDGAN_TEST_NUMBER", 5, minimum=1, maximum=10)
    monkeypatch.setenv("MEDGAN_TEST_NUMBER", "10")
    assert limits.env_number("MEDGAN_TEST_NUMBER", 5, minimum=1, maximum=10) == 10


@pytest.mark.parametrize("name", limits.VARIABLES)
@pytest.mark.parametrize("raw", ["abc", "٣"])
def test_every_variable_malformed_is_a_config_error_naming_it(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match=rf"^{name} must be "):
        limits.summary()


def test_summary_reads_every_variable(monkeypatch):
    """Each variable reaches summary() (what start-up checks): setting any one to a good value shows in it."""
    baseline = limits.summary()
    for name in limits.VARIABLES:
        monkeypatch.setenv(name, "7")
        assert limits.summary() != baseline, f"{name} is not read by limits.summary()"
        monkeypatch.delenv(name)


def test_no_numeric_variable_is_read_around_the_parser():
    """int(os.environ…MEDGAN_…)/float(…) or a private fallback parser would bypass env_number's checks."""
    bypass = re.compile(r"\b(int|float)\(\s*os\.(environ|getenv)[^)]*MEDGAN_|def _env_(float|int)\b")
    sources = [ROOT / "app.py", *sorted((ROOT / "medgan").rglob("*.py")), *sorted((ROOT / "training").rglob("*.py"))]
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sources
                 for n, line in enumerate(path.read_text().splitlines(), 1) if bypass.search(line)]
    assert not offenders, offenders


def tracked_sources() -> list[Path]:
    """app.py, medgan/ and training/ as committed (git ls-files), else as found on disk."""
    try:
        names = subprocess.run(["git", "ls-files", "app.py", "medgan", "training"], cwd=ROOT, capture_output=True,
                               text=True, timeout=30, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        names = []
    paths = [ROOT / n for n in names if n.endswith(".py")] or \
        [ROOT / "app.py", *(ROOT / "medgan").rglob("*.py"), *(ROOT / "training").rglob("*.py")]
    return sorted(p for p in paths if p.is_file())


def test_every_variable_read_through_the_parser_is_checked_at_start_up():
    """A new env_number("MEDGAN_…") must join limits.summary() (and VARIABLES, and the README), or a malformed
    value would pass start-up and fail the first request that reads it."""
    read = {m for path in tracked_sources()
            for m in re.findall(r"env_number\(\s*[\"'](MEDGAN_\w+)", path.read_text())}
    assert read and read - {"MEDGAN_TEST_NUMBER"} <= set(limits.VARIABLES), sorted(read - set(limits.VARIABLES))


def test_configuration_page_documents_every_variable():
    """docs/configuration.md names every limit and every MEDGAN_* variable the code reads from the environment
    (through env_number, env_paths, os.environ or os.getenv), and none that nothing reads."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    reader = re.compile(r"""(?:env_number|env_flag|env_paths|environ\.get|environ\.setdefault|getenv|environ\[)\(?\s*"""
                        r"""["'](MEDGAN_\w+)""")
    read = {m for path in tracked_sources() for m in reader.findall(path.read_text())} | set(limits.VARIABLES)
    read |= set(reader.findall((ROOT / "tests" / "conftest.py").read_text()))
    documented = set(re.findall(r"`(MEDGAN_\w+)`", page))
    assert read - {"MEDGAN_TEST_NUMBER"} <= documented, sorted(read - documented)
    quoted = {m for path in [*tracked_sources(), ROOT / "tests" / "conftest.py"]
              for m in re.findall(r"""["'](MEDGAN_\w+)["']""", path.read_text())}
    assert documented <= quoted, sorted(documented - quoted)  # e.g. read in a loop over names


# --- malformed variables are refused by name, when they are used -------------------------------------------
def test_max_count_per_call_is_read_when_used_not_at_import(monkeypatch):
    monkeypatch.setenv("MEDGAN_MAX_COUNT_PER_CALL", "abc")
    with pytest.raises(ConfigError, match="^MEDGAN_MAX_COUNT_PER_CALL must be an integer >= 1, got 'abc'"):
        check_count(3)
    with pytest.raises(ConfigError, match="MEDGAN_MAX_COUNT_PER_CALL"):
        from medgan.validation import MAX_COUNT_PER_CALL  # noqa: F401
    # importing medgan afresh does not read it (a bad value must not break the import)
    proc = subprocess.run([sys.executable, "-c", "import medgan, medgan.validation"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MEDGAN_MAX_COUNT_PER_CALL": "abc"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    monkeypatch.setenv("MEDGAN_MAX_COUNT_PER_CALL", "8")
    assert check_count(8) == 8
    with pytest.raises(Exception, match="count must be between 1 and 8"):
        check_count(9)
    from medgan.validation import MAX_COUNT_PER_CALL
    assert MAX_COUNT_PER_CALL == 8


def test_max_loaded_models(monkeypatch):
    monkeypatch.setenv("MEDGAN_MAX_LOADED_MODELS", "abc")
    with pytest.raises(ConfigError, match="^MEDGAN_MAX_LOADED_MODELS must be an integer >= 1, got 'abc'"):
        Registry([])
    monkeypatch.setenv("MEDGAN_MAX_LOADED_MODELS", "3")
    assert Registry([]).max_loaded == 3


@pytest.mark.parametrize("name", ["MEDGAN_MEDIGAN_TIMEOUT_S", "MEDGAN_MEDIGAN_STARTUP_S"])
def test_medigan_worker_timeouts(monkeypatch, tmp_path, name):
    monkeypatch.setenv(name, "abc")
    with pytest.raises(ConfigError, match=f"^{name} must be a number >= 1, got 'abc'"):
        medigan_source.run_worker(tmp_path, "x", {}, 1, 0)  # refused, not the 120 s default
    monkeypatch.setenv(name, "2.5")
    assert getattr(limits, name.lower().removeprefix("medgan_"))() == 2.5


@pytest.mark.parametrize("name", ["MEDGAN_MEDIGAN_REFRESH_S", "MEDGAN_MEDIGAN_REFRESH_TIMEOUT_S"])
def test_medigan_catalogue_refresh_settings(monkeypatch, tmp_path, name):
    for offline in ("HF_HUB_OFFLINE", "MEDGAN_OFFLINE"):
        monkeypatch.delenv(offline, raising=False)
    monkeypatch.setenv(name, "abc")
    dead = "http://127.0.0.1:9/global.json"  # never reached: the setting is refused first
    with pytest.raises(ConfigError, match=f"^{name} must be a number"):
        medigan_source.refresh_catalogue(tmp_path, dead, max_age_s=0 if name.endswith("TIMEOUT_S") else None)


def test_max_upload_mb(monkeypatch):
    assert limits.max_upload_bytes() == 0  # default: the upload route is closed
    monkeypatch.setenv("MEDGAN_MAX_UPLOAD_MB", "0.5")
    assert limits.max_upload_bytes() == 2**19
    monkeypatch.setenv("MEDGAN_MAX_UPLOAD_MB", "0")
    assert limits.max_upload_bytes() == 0
    for raw in ("abc", "-1", "5000"):
        monkeypatch.setenv("MEDGAN_MAX_UPLOAD_MB", raw)
        with pytest.raises(ConfigError, match=f"^MEDGAN_MAX_UPLOAD_MB must be a number between 0 and 1024, got '{raw}'"):
            limits.max_upload_bytes()


# --- through the app -------------------------------------------------------------------------------------
def test_app_refuses_to_start_on_a_malformed_setting(tmp_path):
    """Before Gradio is imported: about 3 s (torch's import), so it stays in the fast tier."""
    env = {**os.environ, "MEDGAN_MAX_COUNT_PER_CALL": "abc", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.strip().splitlines()[-1] == ("[medgan] cannot start: MEDGAN_MAX_COUNT_PER_CALL must be an "
                                                    "integer >= 1, got 'abc'"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr


# How a runner that imports app.py launches it: `demo.launch()` with no arguments of ours. A fault is planted
# in service.generate for seed 13, to see what an unexpected error logs.
RUNNER = '''
import sys
sys.path.insert(0, {root!r})
import medgan.service as service
original = service.generate

def generate(model, seed, count, *args, **kwargs):
    if seed == 13:
        raise RuntimeError("injected fault")
    return original(model, seed, count, *args, **kwargs)

service.generate = generate
import app
app.demo.launch()
'''


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def log_after(proc, before: int, needle: str, timeout: float = 10) -> str:
    """What the app logged since `before` bytes, once it contains `needle` (and a moment more)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = proc.log_path.read_text()[before:]
        if needle in text:
            time.sleep(0.5)
            return proc.log_path.read_text()[before:]
        time.sleep(0.1)
    pytest.fail(f"{needle!r} not logged: {proc.log_path.read_text()[before:][-3000:]}")


@pytest.mark.slow
def test_uploads_are_capped_and_refused_requests_log_one_line(tmp_path):
    weights, uploads = tmp_path / "w", tmp_path / "gradio"
    make_model_folder(weights, "tiny-test")
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(root=str(ROOT)))
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {"MEDGAN_WEIGHTS_DIRS": str(weights), "GRADIO_TEMP_DIR": str(uploads), "MEDGAN_MEDIGAN": "0",
           "MEDGAN_MAX_UPLOAD_MB": "1", "TMPDIR": str(system_tmp)}  # the upload route is closed unless this is set
    with running_app(env, script=script) as app:
        # uploads, opened at 1 MiB: 5 MB refused from its Content-Length by the edge, 1.05 MB by Gradio's own cap
        # as it streams; nothing left on disk; a small file goes into Gradio's cache and nowhere else
        before, tmp_before = files_under(uploads), files_under(system_tmp)
        big = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("big.bin", b"\0" * 5_000_000)}, timeout=60)
        assert big.status_code == 413 and "(MEDGAN_MAX_UPLOAD_MB + form overhead)" in big.text, (big.status_code, big.text)
        over = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("over.bin", b"\0" * 1_100_000)}, timeout=60)
        assert over.status_code == 413 and "maximum allowed size of 1048576 bytes" in over.text, over.text
        assert files_under(uploads) == before and files_under(system_tmp) == tmp_before
        small = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("small.bin", b"\1" * 1000)}, timeout=60)
        assert small.status_code == 200 and Path(small.json()[0]).is_relative_to(uploads), small.text
        assert files_under(system_tmp) == tmp_before
        recording = httpx.post(f"{app.url}/gradio_api/process_recording", files={"video": ("r.mp4", b"\0" * 1000)})
        assert recording.status_code == 404 and files_under(system_tmp) == tmp_before  # closed whatever the cap

        client = Client(app.url, download_files=False, verbose=False)
        # an expected error (a bad seed): one line, no traceback
        size = app.log_path.stat().st_size
        with pytest.raises(Exception, match="seed must be an integer, got 'not-a-seed'"):
            client.predict("tiny-test", "not-a-seed", 1, api_name="/generate")
        logged = log_after(app, size, "not-a-seed")
        assert logged.strip() == ("[medgan] generate refused: InvalidArgumentError: seed must be an integer, "
                                  "got 'not-a-seed'"), logged
        # an unknown model, with a line break in its id: still one line
        size = app.log_path.stat().st_size
        with pytest.raises(Exception, match="Unknown model id"):
            client.predict("no-such\nmodel", 1, 1, api_name="/generate")
        logged = log_after(app, size, "no-such")
        assert logged.count("\n") == 1 and "UnknownModelError" in logged and "Traceback" not in logged, logged

        # an unexpected error: the full traceback, once (not Gradio's own copy of the gr.Error's as well)
        size = app.log_path.stat().st_size
        with pytest.raises(Exception, match=r"Internal error \(RuntimeError\)") as info:
            client.predict("tiny-test", 13, 1, api_name="/generate")
        assert "injected fault" not in str(info.value)  # the client learns the type, not the details
        logged = log_after(app, size, "RuntimeError: injected fault")
        assert logged.startswith("[medgan] unexpected RuntimeError in generate: injected fault\n"), logged
        assert logged.count("Traceback") == 1 and "runner.py" in logged and 'raise RuntimeError("injected fault")' in logged

        assert [r["caption"] for r in client.predict("tiny-test", 1, 2, api_name="/generate")] == \
            ["SYNTHETIC · tiny-test · seed 1 · #0", "SYNTHETIC · tiny-test · seed 1 · #1"]
