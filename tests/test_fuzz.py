"""Property-based fuzzing of every boundary: medgan's public functions in-process (many examples), the
untrusted files a model folder holds, and /generate and /download of a real app through gradio_client and
raw HTTP. Every answer is a correct result or a clear, typed error; never a traceback or a server path;
no request-supplied id ever reaches the filesystem; the server answers afterwards."""
from __future__ import annotations

import json
import math
import os
import sys
import zipfile
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import medgan
from helpers import ROOT, make_model_folder, running_app
from medgan import MedganError, Registry, service
from medgan.config import ModelConfig
from medgan.errors import InvalidArgumentError, UnknownModelError
from medgan.export import WRITERS, check_format
from medgan.generator import Generator, load_weights
from medgan.registry import default_sources
from medgan.sources.local import LocalSource
from medgan.validation import MAX_SEED, check_count, check_flag, check_model_id, check_seed

LEAKS = ("Traceback", 'File "', "/tmp/", str(ROOT))
MARKER = "zqxfuzzmarker"
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
REMOTE = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

PATHLIKE = ["..", ".", "/", "~", "../", "../../etc/passwd", "/etc/passwd", "weights/", "./tiny-test",
            "tiny-test/../tiny-test", "tiny-test/", "\\..\\", "%2e%2e%2f", "C:\\Windows", "\x00", "file://",
            "tiny-test\x00", "hub:", "medigan:", "local:tiny-test", " ", "\t", "\n"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**80, 2**80),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                    st.sampled_from(["1", "-1", " 7 ", "1e3", "0x10", "nan", "inf", "9" * 40, "true", "False"]))
json_values = st.one_of(scalars, st.lists(scalars, max_size=3))
python_values = st.one_of(
    json_values, st.floats(), st.binary(max_size=8), st.decimals(), st.fractions(), st.complex_numbers(),
    st.just(Fraction(10**400, 1)), st.just(Decimal("NaN")), st.just(np.float32("nan")), st.just(np.int64(3)),
    st.just(np.uint64(2**64 - 1)), st.just(np.bool_(True)), st.just(np.array([1, 2])), st.just(object()),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2), st.sets(st.integers(), max_size=2))
model_ids = st.one_of(st.sampled_from(["tiny-test", " tiny-test ", "TINY-TEST", "ü" * 300, "", *PATHLIKE]),
                      st.builds(lambda a, b: a + b, st.sampled_from(PATHLIKE), st.text(max_size=20)),
                      st.text(max_size=60), json_values)


def mostly(valid, other):
    """`valid` three times in four, so a good share of the examples exercise the success path too."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: valid if ok else other)


def assert_clear(message: str) -> None:
    assert message and message != "None" and len(message) < 600, message
    for leak in LEAKS:
        assert leak not in message, f"{leak!r} leaked into {message!r}"


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- validators and public functions, in-process -----------------------------------------------------
@FAST
@given(python_values)
def test_validators_accept_or_refuse_clearly(value):
    for check, ok in ((check_seed, lambda v: 0 <= v <= MAX_SEED), (lambda v: check_count(v, 16), lambda v: 1 <= v <= 16)):
        try:
            result = check(value)
        except InvalidArgumentError as exc:
            assert_clear(str(exc))
            assert not (is_int(value) and ok(value))  # an in-range int is never refused
        else:
            assert is_int(result) and ok(result)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert result == value
    for check in (lambda v: check_flag("label", v), check_model_id, check_format):
        try:
            result = check(value)
        except InvalidArgumentError as exc:
            assert_clear(str(exc))
        else:
            assert isinstance(result, (bool, str))
    if isinstance(value, bool):
        assert check_flag("label", value) is value


def outcome(check, value) -> tuple[str, object]:
    """("ok", result) or ("refused", message): what a caller of `check` sees."""
    try:
        return "ok", check(value)
    except InvalidArgumentError as exc:
        return "refused", str(exc)


INT_CHECKS = (check_seed, lambda v: check_count(v, 16))


@pytest.mark.parametrize("text", ["٣", "４２", "１", "৩", "߁", "𝟗", "1٣", "٣.0", "16.٠", "+٣", "٣٣"])
def test_non_ascii_digits_are_refused(text):
    """`\\d` also matches Arabic-Indic, fullwidth, Bengali, NKo, mathematical … digits; int() reads them."""
    for check in INT_CHECKS:
        with pytest.raises(InvalidArgumentError, match="must be an integer, got"):
            check(text)


@FAST
@given(st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=6),
       st.sampled_from(["", "+", "-"]), st.sampled_from(["", ".", ".0"]))
def test_only_ascii_digit_strings_are_numbers(digits, sign, tail):
    text = sign + digits + tail
    for check in INT_CHECKS:
        kind, got = outcome(check, text)
        if all("0" <= c <= "9" for c in digits):
            assert (kind, got) == outcome(check, int(sign + digits)), text
        else:
            assert kind == "refused" and "must be an integer" in got, (text, got)


@pytest.mark.parametrize("text,number", [
    ("16.0", 16.0), ("16.", 16.0), (" +16.000 ", 16.0), ("0.0", 0.0), ("-0.0", -0.0), (".0", 0.0),
    ("16.5", 16.5), ("2.5", 2.5), ("-1.5", -1.5), ("+0.25", 0.25), (".5", 0.5), ("16.50", 16.5), ("-16.0", -16.0),
    ("9223372036854775807.0", 2**63 - 1), ("4.0", 4.0)])
def test_decimal_strings_are_read_like_the_numbers_they_spell(text, number):
    """"16.0" is 16 as 16.0 is; "16.5" is refused with the very message 16.5 gets ("… a whole number …")."""
    for check in INT_CHECKS:
        assert outcome(check, text) == outcome(check, number), text
    if number != int(number):
        assert "must be a whole number" in outcome(check_seed, text)[1]


@FAST
@given(st.sampled_from(["", "+", "-"]), st.integers(0, 10**6), st.text(alphabet="0123456789", max_size=6))
def test_decimal_strings_agree_with_floats(sign, whole, fraction):
    text = f"{sign}{whole}.{fraction}"
    for check in INT_CHECKS:
        assert outcome(check, text) == outcome(check, float(text)), text


def test_digit_limits_still_hold():
    with pytest.raises(InvalidArgumentError, match=r"out of range \(31 digits\)"):
        check_seed("9" * 31)
    with pytest.raises(InvalidArgumentError, match=r"out of range \(31 digits\)"):
        check_seed("9" * 31 + ".0")
    with pytest.raises(InvalidArgumentError, match="seed must be between 0 and 2"):
        check_seed("9" * 30 + ".000")
    assert check_seed("1." + "0" * 5000) == 1  # a long zero fraction is still 1, and quick
    with pytest.raises(InvalidArgumentError, match="whole number, got 1.0000000"):
        check_seed("1." + "0" * 5000 + "1")


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights")
    make_model_folder(weights, "tiny-test")
    return Registry([LocalSource([weights])])


@SOME
@given(model=mostly(st.just("tiny-test"), model_ids), seed=mostly(st.integers(0, MAX_SEED), python_values),
       count=mostly(st.integers(1, 16), python_values))
def test_service_generate_is_a_result_or_a_clear_error(tiny_registry, model, seed, count):
    try:
        result = service.generate(model, seed, count, registry=tiny_registry)
    except MedganError as exc:
        assert_clear(str(exc))
        valid = model == "tiny-test" and is_int(seed) and 0 <= seed <= MAX_SEED and is_int(count) and 1 <= count <= 16
        assert not valid, exc
    else:
        n, s = check_count(count), check_seed(seed)
        assert len(result) == n and [c for _, c in result] == [service.caption("tiny-test", s, i) for i in range(n)]


@SOME
@given(model=mostly(st.just("tiny-test"), st.just("nope")), seed=mostly(st.integers(-2, 2**64), python_values),
       count=mostly(st.integers(-1, 18), python_values), fmt=mostly(st.sampled_from(list(WRITERS)), json_values),
       label=mostly(st.booleans(), python_values))
def test_service_export_is_a_zip_or_a_clear_error(tiny_registry, tmp_path_factory, monkeypatch, model, seed,
                                                  count, fmt, label):
    monkeypatch.setenv("MEDGAN_EXPORT_DIR", str(tmp_path_factory.getbasetemp() / "fuzz-exports"))
    try:
        path = service.export(model, seed, count, fmt, label, registry=tiny_registry)
    except MedganError as exc:
        assert_clear(str(exc))
    else:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
        assert meta["count"] == check_count(count) and meta["seed"] == check_seed(seed) and meta["synthetic"]
        path.unlink()


@SOME
@given(count=mostly(st.integers(1, 70), python_values), seed=mostly(st.integers(0, MAX_SEED), python_values),
       start=mostly(st.integers(0, 2**63), python_values),
       output_type=mostly(st.sampled_from(["pil", "np", "pt"]), json_values))
def test_generator_generate_is_a_result_or_a_clear_error(tiny_registry, count, seed, start, output_type):
    gen = tiny_registry.load("tiny-test")
    try:
        out = gen.generate(count, seed, start=start, output_type=output_type)
    except InvalidArgumentError as exc:
        assert_clear(str(exc))
    else:
        assert len(out) == check_count(count)


@pytest.fixture(scope="module")
def fs_probe():
    """Record filesystem access whose path contains MARKER: audit events (open, listdir, …) and stat calls."""
    hits: list[tuple[str, str]] = []
    state = {"on": False}

    def text(arg) -> str:
        try:
            return os.fsdecode(os.fspath(arg)) if isinstance(arg, (str, bytes, os.PathLike)) else ""
        except (TypeError, ValueError):
            return ""

    def hook(event, args):
        if state["on"] and (event == "open" or event.startswith(("os.", "shutil.", "glob."))):
            for arg in args if isinstance(args, tuple) else ():
                if MARKER in text(arg):
                    hits.append((event, text(arg)))
    sys.addaudithook(hook)  # cannot be removed: gated by state["on"]
    yield hits, state


def test_the_probe_sees_filesystem_access(fs_probe, tmp_path):
    """Control: the probe below would notice an id used as a path."""
    hits, state = fs_probe
    state["on"] = True
    try:
        with pytest.raises(FileNotFoundError):
            open(tmp_path / MARKER)
        sorted(tmp_path.glob(f"{MARKER}*"))
    finally:
        state["on"] = False
    assert [e for e, _ in hits][:1] == ["open"]
    hits.clear()


@SOME
@given(prefix=st.sampled_from(PATHLIKE) | st.text(max_size=10), suffix=st.sampled_from(PATHLIKE) | st.text(max_size=10))
def test_no_request_path_reaches_the_filesystem(tiny_registry, fs_probe, monkeypatch, prefix, suffix):
    hits, state = fs_probe
    model = prefix + MARKER + suffix
    stats = []
    real_stat, real_lstat = os.stat, os.lstat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (stats.append(os.fsdecode(p)) if isinstance(p, (str, bytes, os.PathLike)) else None) or real_stat(p, *a, **k))
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: (stats.append(os.fsdecode(p)) if isinstance(p, (str, bytes, os.PathLike)) else None) or real_lstat(p, *a, **k))
    registry = Registry(default_sources([tiny_registry.sources[0].folders[0]]))
    state["on"] = True
    try:
        for call in (lambda: service.generate(model, 1, 1, registry=registry),
                     lambda: service.export(model, 1, 1, "png", False, registry=registry),
                     lambda: registry.info(model), lambda: registry.load(model),
                     lambda: service.model_markdown(model, registry=registry)):
            try:
                call()
            except (UnknownModelError, InvalidArgumentError) as exc:
                assert_clear(str(exc))
            else:
                pytest.fail(f"{model!r} was accepted")
    finally:
        state["on"] = False
    assert not hits and not [p for p in stats if MARKER in p], (hits, stats)


# --- untrusted files: config.json and model.safetensors ------------------------------------------------
json_docs = st.recursive(st.none() | st.booleans() | st.integers(-10, 2**40) | st.floats(allow_nan=False)
                         | st.text(max_size=8), lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
GENERATOR_KEYS = ["latent_dim", "resolution", "channels", "base_width", "widths", "max_width", "bogus"]


@SOME
@given(key=st.sampled_from(["id", "title", "generator", "metrics", "license", *GENERATOR_KEYS]), value=json_docs,
       whole=st.booleans())
def test_untrusted_config_json_loads_or_is_refused(tmp_path_factory, key, value, whole):
    folder = tmp_path_factory.getbasetemp() / "cfg-fuzz" / "m"
    if not folder.exists():
        make_model_folder(folder.parent, "m")
    good = json.loads((folder / "config.json").read_text())
    doc = dict(good)
    if whole:
        doc = value
    elif key in GENERATOR_KEYS:
        doc["generator"] = {**good["generator"], key: value}
    else:
        doc[key] = value
    (folder / "config.json").write_text(json.dumps(doc))
    try:
        registry = Registry([LocalSource([folder.parent])])
        listed = registry.list_models()
        for info in listed:
            info.label(), info.to_dict(), service.model_markdown(info.id, registry=registry)
        if listed:
            registry.load(listed[0].id).generate(1, 0, output_type="np")
    except MedganError as exc:
        assert_clear(str(exc))
    finally:
        (folder / "config.json").write_text(json.dumps(good))


@SOME
@given(data=st.data())
def test_untrusted_weights_load_or_are_refused(tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "w-fuzz" / "m"
    if not folder.exists():
        make_model_folder(folder.parent, "m")
        (folder / "good.bin").write_bytes((folder / "model.safetensors").read_bytes())
    blob = bytearray((folder / "good.bin").read_bytes())
    header = int.from_bytes(blob[:8], "little") + 8
    how = data.draw(st.sampled_from(["truncate", "flip-header", "flip-any", "length"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "length":
        blob[:8] = data.draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    else:
        hi = header if how == "flip-header" else len(blob)
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, hi - 1))] ^= 1 << data.draw(st.integers(0, 7))
    (folder / "model.safetensors").write_bytes(bytes(blob))
    try:
        Generator(ModelConfig.load(folder), load_weights(folder, "m")).generate(1, 0, output_type="np")
    except MedganError as exc:
        assert_clear(str(exc))


# --- through a real app ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    weights = tmp_path_factory.mktemp("app-weights")
    make_model_folder(weights, "tiny-test")
    with running_app({"MEDGAN_WEIGHTS_DIRS": str(weights), "MEDGAN_EXPORT_RETENTION_S": "5"}) as proc:
        yield proc, Client(proc.url, download_files=False, verbose=False), Registry(default_sources([weights]))


def expect_same(remote, local, same) -> None:
    """The app answers what the Python API answers: an equivalent result, or the same message."""
    try:
        want = local()
    except MedganError as exc:
        event(f"error: {type(exc).__name__}")
        with pytest.raises(Exception) as got:
            remote()
        message = str(got.value)
        assert_clear(message)
        if isinstance(exc, UnknownModelError):
            assert message.startswith("Unknown model id"), message
        else:
            assert message == str(exc)
        return
    event("result")
    got = remote()
    assert same(got, want), (got, want)


@pytest.mark.slow
@REMOTE
@given(model=mostly(st.just("tiny-test"), model_ids), seed=mostly(st.integers(0, 2**32), json_values),
       count=mostly(st.integers(1, 16), json_values))
def test_generate_endpoint_fuzz(app, model, seed, count):
    _, client, registry = app
    model, seed, count = json.loads(json.dumps([model, seed, count]))  # what the server receives
    expect_same(lambda: client.predict(model, seed, count, api_name="/generate"),
                lambda: service.generate(model, seed, count, registry=registry),
                lambda got, want: [g["caption"] for g in got] == [c for _, c in want])


@pytest.mark.slow
@REMOTE
@given(seed=mostly(st.integers(0, 2**32), json_values), count=mostly(st.integers(1, 16), json_values),
       fmt=mostly(st.sampled_from(list(WRITERS)), json_values), label=mostly(st.booleans(), json_values))
def test_download_endpoint_fuzz(app, tmp_path_factory, monkeypatch, seed, count, fmt, label):
    _, client, registry = app
    seed, count, fmt, label = json.loads(json.dumps([seed, count, fmt, label]))
    monkeypatch.setenv("MEDGAN_EXPORT_DIR", str(tmp_path_factory.getbasetemp() / "local-exports"))
    expect_same(lambda: client.predict("tiny-test", seed, count, fmt, label, api_name="/download"),
                lambda: service.export("tiny-test", seed, count, fmt, label, registry=registry),
                lambda got, want: got["orig_name"].rsplit("_", 1)[0] == want.name.rsplit("_", 1)[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed,count,expected", [
    ("NaN", "2", "seed must be a finite integer, got nan"), ("Infinity", "2", "seed must be a finite integer, got inf"),
    ("-Infinity", "2", "seed must be a finite integer, got -inf"), ("1e400", "2", "seed must be a finite integer"),
    ("1", "NaN", "count must be a finite integer, got nan"), ("1", "1e400", "count must be a finite integer"),
    ("1", "2.5", "count must be a whole number, got 2.5"), ("1", "\"2.5\"", "count must be a whole number, got 2.5"),
    ("1", "null", "count must be an integer, got None"),
    ("99999999999999999999999999", "2", "seed must be between 0 and 2**63-1"),
    ("1", "{\"a\": 1}", "count must be an integer, got dict"), ("[1]", "2", "seed must be an integer, got list")])
def test_raw_http_non_json_numbers_get_our_message(app, seed, count, expected):
    """JSON has no NaN/Infinity, but Python's parser (and so the server) accepts them from any HTTP client."""
    proc, client, _ = app
    body = f'{{"data": ["tiny-test", {seed}, {count}, 1.0, "any"]}}'  # every input: raw HTTP gets no defaults
    r = httpx.post(f"{proc.url}/gradio_api/call/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    events = httpx.get(f"{proc.url}/gradio_api/call/generate/{r.json()['event_id']}", timeout=30).text
    assert "event: error" in events and expected in events, events
    assert_clear(events)


@pytest.mark.slow
def test_server_still_answers_after_the_fuzzing(app):
    proc, client, _ = app
    result = client.predict("tiny-test", 5, 3, api_name="/generate")
    assert [r["caption"] for r in result] == [service.caption("tiny-test", 5, i) for i in range(3)]
    assert proc.poll() is None
    log = proc.log_path.read_text()
    assert "[medgan] unexpected" not in log, log[-3000:]  # no error escaped medgan's typed errors


@pytest.mark.slow
def test_cli_refuses_bad_arguments_clearly(tmp_path):
    """The dataset CLI shares the same checks: exit 2 with the message, no traceback."""
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "medgan.dataset", "tiny-test", "--count", "2", "--seed", "nan",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "seed must be an integer, got 'nan'" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
