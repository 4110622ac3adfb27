"""Worker process that runs one medigan model; started by runner.py beside it, never imported by the server.

    python medgan/sources/medigan/worker.py REQUEST.json      (cwd = the medigan home)

It imports neither medgan nor anything of the app (only the standard library, numpy and medigan), so a model
package cannot reach the server's code. Stages: deps (importlib.metadata, before any heavy import) -> import
(torch, medigan; then it creates the `ready` file, which starts the server's generation timeout) -> setup
(medigan copies/unzips/imports the package) -> generate -> convert. The result is an .npz of uint8 arrays
(`images`) plus meta.json; a failure is error.json {kind, stage, message}. Nothing is pickled. Its atomic
result write is its own (os.replace), not medgan.files: it must not import medgan. Run as a script, this
folder is sys.path[0] until main() drops it, so no module beside it may share a standard-library name.
"""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

HERE = Path(__file__).resolve().parent


def missing_dependencies(requirements: list[str]) -> list[str]:
    """Requirement strings (medigan's execution.dependencies) that are not installed or too old/new."""
    from importlib import metadata

    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # packaging absent: check names only
        Requirement = None  # type: ignore[assignment]
    missing = []
    for text in requirements:
        if not isinstance(text, str) or not text.strip():
            continue
        name, spec = text.strip(), None
        if Requirement is not None:
            try:
                req = Requirement(text)
                name, spec = req.name, req.specifier
            except InvalidRequirement:
                pass
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(text.strip())
            continue
        if spec and not spec.contains(version, prereleases=True):
            missing.append(f"{text.strip()} (installed {version})")
    return missing


def to_uint8(image: Any) -> np.ndarray:
    """One image from a foreign model -> uint8 [H, W] or [H, W, 3] (best effort; see README)."""
    import numpy as np

    if isinstance(image, dict):  # e.g. {"image": …, "mask": …}
        image = image.get("image", next(iter(image.values()), None))
    if isinstance(image, (list, tuple)) and image and not isinstance(image[0], (int, float)):
        image = image[0]  # (image, mask) pairs: keep the image
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.dtype == object or a.ndim < 2:
        raise ValueError(f"an output is not an image array (dtype {a.dtype}, shape {a.shape})")
    a = np.squeeze(a)
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[-1] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first -> last
    if a.ndim == 3:
        a = a[..., :3] if a.shape[-1] >= 3 else a[..., 0]  # RGB(+mask) -> RGB; 2 channels -> the first
    if a.ndim != 2 and not (a.ndim == 3 and a.shape[-1] == 3):
        raise ValueError(f"an output has shape {a.shape}, not an image")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    f = a.astype(np.float64)
    if not np.isfinite(f).all():
        raise ValueError("an output contains NaN or infinite values")
    lo, hi = float(f.min()), float(f.max())
    if np.issubdtype(a.dtype, np.floating) and lo >= 0 and hi <= 1:
        f = f * 255
    elif np.issubdtype(a.dtype, np.floating) and lo >= -1 and hi <= 1:
        f = (f + 1) * 127.5
    elif np.issubdtype(a.dtype, np.integer) and hi > 255:
        f = f * (255.0 / hi)  # 16-bit and the like
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def to_stack(result: Any, count: int) -> np.ndarray:
    import numpy as np

    if result is None:
        raise ValueError("the model returned nothing (it may only write files), no images to show")
    if hasattr(result, "detach") or isinstance(result, np.ndarray):
        items = list(result) if np.ndim(result) >= 3 else [result]
    elif isinstance(result, (list, tuple)):
        items = list(result)
    else:
        raise ValueError(f"the model returned a {type(result).__name__}, not a list of images")
    images = [to_uint8(x) for x in items[:count]]
    if len(images) < count:
        raise ValueError(f"asked for {count} images, the model returned {len(images)}")
    if len({x.shape for x in images}) != 1:
        raise ValueError(f"the model returned images of different shapes {sorted({x.shape for x in images})}")
    return np.stack(images)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(req: dict[str, Any], home: Path, state: dict[str, str]) -> dict[str, Any]:
    """Generate; returns meta. Raises _Failure, or whatever the model raised (state["stage"] says where)."""
    stage = state["stage"] = "deps"
    catalogue = json.loads((home / "config" / "global.json").read_text())
    entry = catalogue[req["model_id"]]
    missing = missing_dependencies(list(entry["execution"].get("dependencies") or []))
    if missing:
        raise _Failure("missing_deps", stage, f"missing: {', '.join(missing)}", missing=missing)
    stage = state["stage"] = "import"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation noise
        try:
            import numpy as np
            import torch  # noqa: F401  (imported before `ready`, so the model's timeout excludes it)
            import medigan
        except ImportError as exc:
            raise _Failure("unavailable", stage, f"cannot import medigan ({exc}); it needs setuptools<81") from None
    Path(req["ready"]).touch()
    seed, count = int(req["seed"]), int(req["count"])
    stage = state["stage"] = "setup"
    seed_everything(seed)
    generators = medigan.Generators()
    try:
        executor = generators.get_model_executor(model_id=req["model_id"], install_dependencies=False)
    except Exception as exc:
        link = str(entry["execution"].get("package_link", ""))
        if "://" in link and not req.get("package_present", True):
            raise _Failure("unavailable", stage, f"could not fetch the package ({type(exc).__name__}: "
                           f"{str(exc)[:200]})") from None
        raise
    fn = getattr(executor.deserialized_model_as_lib, executor.generate_method_name)
    try:
        import inspect
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    if "seed" in params:  # only where the model names it; **kwargs may forward it somewhere that breaks
        kwargs["seed"] = seed
    if int(req.get("start", 0)):
        if "start" not in params:
            raise _Failure("error", stage, "this model cannot start at an index other than 0")
        kwargs["start"] = int(req["start"])
    stage = state["stage"] = "generate"
    seed_everything(seed)
    out_dir = Path(req["output_path"])
    result = generators.generate(model_id=req["model_id"], num_samples=count, output_path=str(out_dir),
                                 save_images=False, install_dependencies=False, **kwargs)
    stage = state["stage"] = "convert"
    try:
        images = to_stack(result, count)
    except ValueError as exc:
        raise _Failure("error", stage, str(exc)) from None
    tmp = Path(req["out"] + ".tmp.npz")
    np.savez(tmp, images=images)
    os.replace(tmp, req["out"])
    return {"seed_passed": "seed" in kwargs, "shape": list(images.shape)}


class _Failure(Exception):
    def __init__(self, kind: str, stage: str, message: str, **extra: Any):
        super().__init__(message)
        self.kind, self.stage, self.extra = kind, stage, extra


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[1]).read_text())
    home = Path(req["home"]).resolve()
    # medigan imports `models.<id>.<package>` from its cwd: the home goes first on sys.path, this folder
    # (which a script run puts there) goes away so no medgan module can shadow or be reached.
    sys.path[:] = [str(home)] + [p for p in sys.path if p and Path(p).resolve() != HERE]
    os.chdir(home)
    state = {"stage": "start"}

    def fail(kind: str, stage_name: str, message: str, **extra: Any) -> int:
        Path(req["error"]).write_text(json.dumps({"kind": kind, "stage": stage_name, "message": message, **extra}))
        return 3

    try:
        meta = run(req, home, state)
    except _Failure as exc:
        return fail(exc.kind, exc.stage, str(exc), **exc.extra)
    except SystemExit as exc:  # the model's code called sys.exit(): a failure, not a clean exit
        return fail("error", state["stage"], f"the model's code called sys.exit({exc.code!r})")
    except BaseException as exc:  # noqa: BLE001 - report anything the model (or medigan) raised
        return fail("error", state["stage"], f"{type(exc).__name__}: {exc}")
    Path(req["meta"]).write_text(json.dumps(meta))
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # do not wait for threads the model's code may have left running
