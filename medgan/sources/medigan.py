"""medigan's catalogue of published medical GANs (and our own models packaged for medigan), as a Source.

The "medigan home" (MEDGAN_MEDIGAN_HOME, default <MEDGAN_CACHE_DIR or ~/.cache/medgan>/medigan) is the folder
medigan itself expects as its working directory: `config/global.json` (the catalogue) and `models/<id>/…`
(unpacked model packages). Listing parses global.json here, in this process, and never imports medigan or any
model code. Generation runs medgan/medigan_worker.py in a subprocess (cwd = the home), so foreign
code that crashes, hangs, calls os.chdir or sys.exit cannot take this process down; results come back as an
.npz of uint8 arrays read with allow_pickle=False.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from .. import limits
from ..errors import GenerationError, InvalidArgumentError, SourceUnavailableError, UnknownModelError
from ..validation import check_count, check_seed
from . import NOISE_TO_IMAGE, ModelInfo

log = logging.getLogger(__name__)

IMAGE_TO_IMAGE = "image-to-image"
MASK_CONDITIONED = "mask-conditioned"
PREFIX = "medigan:"
CONFIG_URL = "https://raw.githubusercontent.com/RichardObi/medigan/main/config/global.json"  # what medigan uses
CONFIG_REL = Path("config") / "global.json"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent  # folder holding the `medgan` package
WORKER = Path(__file__).resolve().parent.parent / "medigan_worker.py"  # run as a script, not imported here
MAX_CATALOGUE_BYTES = 20 << 20
# Free-text modality names of medigan's catalogue -> DICOM modality codes (as medgan's own models use).
MODALITY_CODES = {"mmg": "MG", "mammography": "MG", "mri": "MR", "mr": "MR", "t1": "MR", "t2": "MR",
                  "dce-mri": "MR", "x-ray": "DX", "xray": "DX", "ct": "CT", "endoscopy": "ES"}
# Generate-argument names that mean "give me an input image / mask" (image-to-image, mask-conditioned).
INPUT_ARGS = ("input_path", "image_paths_input", "F_img_path", "T1_img_path")
OUR_TAG = "medgan-studio"  # selection.tags marker of packages written by training.export_medigan


def is_offline() -> bool:
    """True when MEDGAN_OFFLINE or HF_HUB_OFFLINE is set to anything but a false-ish value."""
    return any(os.environ.get(n, "").strip().lower() not in ("", "0", "false", "no", "off")
               for n in ("MEDGAN_OFFLINE", "HF_HUB_OFFLINE"))


def default_home() -> Path:
    if os.environ.get("MEDGAN_MEDIGAN_HOME"):
        return Path(os.environ["MEDGAN_MEDIGAN_HOME"]).expanduser()
    cache = os.environ.get("MEDGAN_CACHE_DIR") or Path.home() / ".cache" / "medgan"
    return Path(cache).expanduser() / "medigan"


# --- the catalogue -----------------------------------------------------------------------------------

def valid_catalogue(data: object) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(e, dict) and isinstance(e.get("execution"), dict) for e in data.values())


def read_catalogue(home: Path) -> dict[str, dict[str, Any]]:
    """global.json as {model_id: entry}; {} when missing; ValueError when unreadable or not medigan's schema."""
    path = home / CONFIG_REL
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {str(exc)[:120]}") from None
    if not valid_catalogue(data):
        raise ValueError("not a medigan catalogue (expected {model_id: {execution, selection, description}})")
    return data


def _write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def add_to_catalogue(home: str | Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Merge {model_id: entry} into the home's global.json (created if missing); returns its path."""
    home = Path(home)
    if not valid_catalogue(entries):
        raise InvalidArgumentError("entries must be {model_id: {execution: …, selection: …, description: …}}")
    try:
        current = read_catalogue(home)
    except ValueError:
        current = {}
    (home / "models").mkdir(parents=True, exist_ok=True)
    _write_json_atomic(home / CONFIG_REL, {**current, **entries})
    return home / CONFIG_REL


def refresh_catalogue(home: Path, url: str | None = None, timeout_s: float | None = None,
                      max_age_s: float | None = None) -> str:
    """Download medigan's global.json into the home when online and the cached copy is stale.

    Never when MEDGAN_OFFLINE / HF_HUB_OFFLINE is set. Entries only in the local copy (e.g. our own models
    registered with training.export_medigan) are kept. Returns what happened, for logs.
    """
    if is_offline():
        return "offline"
    path = home / CONFIG_REL
    max_age_s = limits.medigan_refresh_s() if max_age_s is None else max_age_s
    try:
        if time.time() - path.stat().st_mtime < max_age_s:
            return "fresh"
    except OSError:
        pass
    url = url or os.environ.get("MEDGAN_MEDIGAN_CONFIG_URL") or CONFIG_URL
    timeout_s = limits.medigan_refresh_timeout_s() if timeout_s is None else timeout_s
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (https or a test URL)
            data = json.loads(response.read(MAX_CATALOGUE_BYTES + 1)[:MAX_CATALOGUE_BYTES])
    except Exception as exc:  # unreachable, DNS, timeout, bad JSON: keep the cache
        log.info("medigan catalogue not refreshed (%s); using the cached copy if any", type(exc).__name__)
        return f"failed: {type(exc).__name__}"
    if not valid_catalogue(data):
        return "failed: not a medigan catalogue"
    try:
        local = read_catalogue(home)
    except ValueError:
        local = {}
    _write_json_atomic(path, {**data, **{k: v for k, v in local.items() if k not in data}})
    return "refreshed"


# --- entry -> ModelInfo ------------------------------------------------------------------------------

def _strings(value: object) -> list[str]:
    return [str(v) for v in value if v not in (None, "")] if isinstance(value, list) else []


def classify(entry: dict[str, Any]) -> str:
    """noise-to-image / image-to-image / mask-conditioned, from the entry's `function` list, custom
    generate arguments and type (two real entries have an empty `function` list)."""
    selection = entry.get("selection") or {}
    functions = " | ".join(_strings(selection.get("function"))).lower()
    custom = ((entry.get("execution") or {}).get("generate_method") or {}).get("args", {}).get("custom") or {}
    arch = str(selection.get("type", "")).lower()
    if "mask to image" in functions or "inpainting" in functions:
        return MASK_CONDITIONED
    if "image to image" in functions or any(k in custom for k in INPUT_ARGS) or \
            any(a in arch for a in ("cyclegan", "pix2pix")):
        return IMAGE_TO_IMAGE
    if "noise to image" in functions or "unconditional" in functions:
        return NOISE_TO_IMAGE
    return IMAGE_TO_IMAGE  # unknown: do not offer it as seed-only sampling


def _int(value: object) -> int | None:
    try:
        return int(float(value))  # the catalogue has "224" and 224.0 as well as 224
    except (TypeError, ValueError):
        return None


def image_shape(entry: dict[str, Any]) -> tuple[int | None, int | None, int]:
    """(height, width, channels) from execution.image_size, falling back to selection height/width/depth."""
    size = (entry.get("execution") or {}).get("image_size")
    selection = entry.get("selection") or {}
    dims = [_int(v) for v in size] if isinstance(size, list) else []
    if isinstance(size, (int, float, str)) and _int(size):
        dims = [_int(size), _int(size)]
    height = dims[0] if dims else _int(selection.get("height"))
    width = dims[1] if len(dims) > 1 else _int(selection.get("width")) or height
    channels = dims[2] if len(dims) > 2 and dims[2] else (_int(selection.get("depth")) or 1)
    return height, width, channels


def modality_code(names: list[str]) -> str:
    for name in names:
        code = MODALITY_CODES.get(name.strip().lower())
        if code:
            return code
    return names[0] if names else ""


def published_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    """Numeric performance values of the catalogue, labelled *_published (claimed by the authors, not
    measured here): FID -> fid_published, FID_RADIMAGENET -> fid_radimagenet_published, …"""
    perf = (entry.get("selection") or {}).get("performance") or {}
    return {f"{k.lower()}_published": v for k, v in perf.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def package_present(home: Path, model_id: str, execution: dict[str, Any]) -> bool:
    """What medigan checks before downloading: the weights file (unpacked) or the package zip."""
    name = f"{execution.get('model_name', '')}{execution.get('extension', '')}"
    folder = home / "models" / model_id
    package = str(execution.get("package_name", ""))
    return bool(name) and ((folder / package / name).is_file() or (folder / name).is_file()
                           or (folder / f"{package}.zip").is_file())


def is_url(link: object) -> bool:
    return isinstance(link, str) and bool(re.match(r"^[a-z][a-z0-9+.-]*://", link, re.I))


def _host(link: str) -> str:
    return re.sub(r"^[a-z][a-z0-9+.-]*://([^/]+).*$", r"\1", link, flags=re.I)


def info_from_entry(model_id: str, entry: dict[str, Any], home: Path) -> ModelInfo:
    selection, description = entry.get("selection") or {}, entry.get("description") or {}
    execution = entry.get("execution") or {}
    kind = classify(entry)
    height, width, channels = image_shape(entry)
    notes, comment = [], str(description.get("comment") or "")
    if kind != NOISE_TO_IMAGE:
        needs = "an input image" if kind == IMAGE_TO_IMAGE else "an input mask or image"
        notes.append(f"{kind}: needs {needs}, so it is listed but cannot be sampled from a seed here")
    else:
        link = execution.get("package_link")
        if not package_present(home, model_id, execution):
            if is_url(link):
                notes.append(f"package not downloaded yet (from {_host(link)})"
                             + ("; offline, so it cannot run now" if is_offline() else ""))
            elif link and not Path(str(link)).is_file():
                notes.append("package file is missing")
        notes.append("MedGAN Studio model packaged for medigan; deterministic per (seed, index)"
                     if OUR_TAG in _strings(selection.get("tags")) else
                     "runs medigan's code in a worker process; determinism not verified offline")
    if height and width and height != width:
        comment = f"Images are {height}×{width}. {comment}"
    return ModelInfo(
        id=PREFIX + model_id, title=str(description.get("title") or model_id), source="medigan",
        modality=modality_code(_strings(selection.get("modality"))),
        organ=(_strings(selection.get("organ")) or [""])[0],
        resolution=height if height and height == width else None,
        channels=3 if channels >= 3 else 1,
        architecture=str(selection.get("type") or ""),
        dataset=", ".join(_strings(selection.get("dataset"))),
        license=str(selection.get("license") or ""), kind=kind, metrics=published_metrics(entry),
        description=comment, card_summary=comment[:600], revision=entry_revision(entry), notice="; ".join(notes))


def entry_revision(entry: dict[str, Any]) -> str:
    """A short digest of the entry: identifies what ran, for provenance."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:12]


_REFRESH_TRIED: dict[str, float] = {}  # home -> when this process last tried to download the catalogue


# --- the source --------------------------------------------------------------------------------------

class MediganSource:
    """Models of a medigan home as `medigan:<model_id>`. `notice` says why nothing is listed, if so."""

    name = "medigan"

    def __init__(self, home: str | Path | None = None, *, refresh: bool = True):
        self.home = Path(home) if home else default_home()
        self.refresh = refresh
        self.notice = ""
        self._refreshed = False
        self._cache: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def from_env(cls) -> "MediganSource":
        """The default source; MEDGAN_MEDIGAN=0 (or off/false/no) leaves medigan out of the app."""
        if os.environ.get("MEDGAN_MEDIGAN", "").strip().lower() in ("0", "off", "false", "no"):
            raise SourceUnavailableError("the medigan source is disabled (MEDGAN_MEDIGAN=0)")
        return cls()

    def catalogue(self) -> dict[str, dict[str, Any]]:
        if self.refresh and not self._refreshed:
            self._refreshed = True
            key = str(self.home.resolve())
            if time.time() - _REFRESH_TRIED.get(key, 0.0) > 3600:  # once per process and hour, per home
                _REFRESH_TRIED[key] = time.time()
                refresh_catalogue(self.home)
        path = self.home / CONFIG_REL
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            self._cache = None
            self.notice = ("medigan catalogue not available: no config/global.json in the medigan home "
                           "(set MEDGAN_MEDIGAN_HOME; it is downloaded when online, or copy medigan's "
                           "global.json there). medigan models are not listed.")
            return {}
        if self._cache and self._cache[0] == stamp:
            return self._cache[1]
        try:
            data = read_catalogue(self.home)
        except ValueError as exc:
            self.notice = f"medigan catalogue is unreadable ({exc}); medigan models are not listed."
            return {}
        self.notice = ""
        self._cache = (stamp, data)
        return data

    def list_models(self) -> list[ModelInfo]:
        infos = []
        for model_id, entry in self.catalogue().items():
            try:
                infos.append(info_from_entry(model_id, entry, self.home))
            except Exception as exc:  # one odd entry must not hide the others
                log.warning("skipping medigan entry %r: %s", model_id, exc)
        return infos

    def entry(self, model_id: str) -> tuple[str, dict[str, Any]]:
        catalogue = self.catalogue()
        bare = model_id[len(PREFIX):] if model_id.startswith(PREFIX) else model_id
        if bare not in catalogue:
            raise UnknownModelError(model_id, [PREFIX + k for k in sorted(catalogue)])
        return bare, catalogue[bare]

    def load(self, model_id: str) -> "MediganGenerator":
        bare, entry = self.entry(model_id)
        kind = classify(entry)
        if kind != NOISE_TO_IMAGE:
            raise InvalidArgumentError(f"model {model_id!r} is {kind} (it needs an input image or mask); only "
                                       "noise-to-image models can be sampled from a seed")
        with self._locks_guard:
            lock = self._locks.setdefault(bare, threading.Lock())
        return MediganGenerator(self.home, bare, entry, lock)

    def fingerprint(self, model_id: str) -> str:
        return entry_revision(self.entry(model_id)[1])


class MediganGenerator:
    """`generate(count, seed)` for one medigan model, each call in a fresh worker subprocess."""

    def __init__(self, home: Path, model_id: str, entry: dict[str, Any], lock: threading.Lock | None = None):
        self.home, self.model_id, self.entry = home, model_id, entry
        self.id = PREFIX + model_id
        self.revision = entry_revision(entry)
        self.source = "medigan"
        self.seed_passed: bool | None = None  # whether the last call could pass `seed` to the model
        self.last_seconds: float | None = None
        self._lock = lock or threading.Lock()

    def generate(self, count: int = 16, seed: int = 0, *, start: int = 0, output_type: str = "pil"):
        count, seed = check_count(count), check_seed(seed)
        if output_type not in ("pil", "np"):
            raise InvalidArgumentError(f"output_type must be 'pil' or 'np' for medigan models, got {output_type!r}")
        with self._lock:  # one worker per model at a time: medigan unpacks into a shared folder
            began = time.perf_counter()
            images, meta = run_worker(self.home, self.model_id, self.entry, count, seed, start)
            self.last_seconds = time.perf_counter() - began
        self.seed_passed = bool(meta.get("seed_passed"))
        if output_type == "pil":
            from PIL import Image
            return [Image.fromarray(a) for a in images]
        return images


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything the model's code spawned
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _redact(text: str, home: Path, work: Path) -> str:
    """Foreign error text without server-side paths (the UI shows it)."""
    for path, alias in ((work, "<worker dir>"), (home, "<medigan home>"), (REPO_ROOT, "<app>")):
        text = text.replace(str(path.resolve()), alias).replace(str(path), alias)
    return text[:400]


def run_worker(home: Path, model_id: str, entry: dict[str, Any], count: int, seed: int, start: int = 0,
               timeout_s: float | None = None, startup_s: float | None = None) -> tuple[np.ndarray, dict]:
    """Run one medigan model in a worker process (medgan/medigan_worker.py) and return (uint8 images, meta).

    `timeout_s` (MEDGAN_MEDIGAN_TIMEOUT_S, default 120) bounds the model's own code: package set-up
    (download, unzip, import) and generate(); it starts once the worker has imported torch and medigan,
    which `startup_s` (MEDGAN_MEDIGAN_STARTUP_S, default 120) bounds separately.
    """
    label = PREFIX + model_id
    timeout_s = limits.medigan_timeout_s() if timeout_s is None else timeout_s
    startup_s = limits.medigan_startup_s() if startup_s is None else startup_s
    execution = entry.get("execution") or {}
    if not package_present(home, model_id, execution):
        link = execution.get("package_link")
        if is_url(link) and is_offline():
            raise SourceUnavailableError(f"model {label!r}: its package is not downloaded yet and this server is "
                                         f"offline (MEDGAN_OFFLINE / HF_HUB_OFFLINE); it comes from {_host(link)}")
        if not is_url(link) and not (link and Path(str(link)).is_file()):
            raise SourceUnavailableError(f"model {label!r}: its package is not in the medigan home and its "
                                         "package_link is not a readable file")
    if importlib_find("medigan") is None:
        raise SourceUnavailableError("medigan is not installed (pip install medigan==1.0.0 'setuptools<81')")
    work = Path(tempfile.mkdtemp(prefix="medgan-medigan-"))
    try:
        request = {"model_id": model_id, "count": count, "seed": seed, "start": start, "home": str(home),
                   "out": str(work / "images.npz"), "meta": str(work / "meta.json"),
                   "error": str(work / "error.json"), "ready": str(work / "ready"),
                   "output_path": str(work / "output"), "offline": is_offline(),
                   "package_present": package_present(home, model_id, execution)}
        (work / "request.json").write_text(json.dumps(request))
        env = {**os.environ, "MPLBACKEND": "Agg", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        with open(work / "worker.log", "wb") as logf:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(work / "request.json")],
                                    cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        began, ready_at = time.monotonic(), None
        while True:
            try:
                proc.wait(0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if ready_at is None and (work / "ready").exists():
                ready_at = now
            if ready_at is None and now - began > startup_s:
                _kill_group(proc)
                raise GenerationError(f"model {label!r}: the medigan worker did not start within {startup_s:g} s")
            if ready_at is not None and now - ready_at > timeout_s:
                _kill_group(proc)
                raise GenerationError(f"model {label!r}: generation timed out after {timeout_s:g} s "
                                      "(MEDGAN_MEDIGAN_TIMEOUT_S); the worker was stopped")
        _kill_group(proc)  # anything the model left running in the background
        return _collect(work, proc.returncode, label, home, count)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def importlib_find(name: str):
    import importlib.util
    try:
        return importlib.util.find_spec(name)  # looks on sys.path; runs none of the package's code
    except (ImportError, ValueError):
        return None


def _collect(work: Path, returncode: int | None, label: str, home: Path, count: int
             ) -> tuple[np.ndarray, dict]:
    error = work / "error.json"
    if error.is_file():
        try:
            err = json.loads(error.read_text())
        except (OSError, ValueError):
            err = {"kind": "error", "message": "the worker wrote an unreadable error report"}
        message = _redact(str(err.get("message", "")), home, work)
        if err.get("kind") == "missing_deps":
            raise SourceUnavailableError(f"model {label!r} needs packages that are not installed: "
                                         f"{', '.join(err.get('missing', []))}. Install them (run-time installs "
                                         "are off), then retry.")
        if err.get("kind") == "unavailable":
            raise SourceUnavailableError(f"model {label!r} is not available: {message}")
        raise GenerationError(f"model {label!r} failed ({err.get('stage', '?')}): {message}")
    out = work / "images.npz"
    if returncode != 0 or not out.is_file():
        logged = work / "worker.log"
        tail = logged.read_bytes()[-1500:].decode(errors="replace") if logged.exists() else ""
        log.warning("medigan worker for %s exited with %s; log tail:\n%s", label, returncode, tail)
        how = f"was killed by signal {-returncode}" if returncode and returncode < 0 else \
            f"exited with code {returncode} without a result"
        raise GenerationError(f"model {label!r}: the medigan worker {how} (the model's code crashed or exited)")
    try:
        with np.load(out, allow_pickle=False) as data:  # never unpickle what foreign code produced
            images = data["images"]
        meta = json.loads((work / "meta.json").read_text()) if (work / "meta.json").is_file() else {}
    except (OSError, ValueError, KeyError) as exc:
        raise GenerationError(f"model {label!r}: the worker's result is unreadable ({type(exc).__name__})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise GenerationError(f"model {label!r}: the worker returned {images.dtype} {images.shape}, "
                              "not uint8 [n, H, W] or [n, H, W, 3]")
    if len(images) != count:
        raise GenerationError(f"model {label!r}: asked for {count} images, the model returned {len(images)}")
    return images, meta if isinstance(meta, dict) else {}


__all__ = ["MediganSource", "MediganGenerator", "add_to_catalogue", "read_catalogue", "refresh_catalogue",
           "classify", "info_from_entry", "default_home", "run_worker", "is_offline", "IMAGE_TO_IMAGE",
           "MASK_CONDITIONED", "CONFIG_URL"]
