"""Export a medgan model folder as a medigan model package (zip + global.json entry).

    python -m training.export_medigan weights/<id> --out DIR [--model-id ID] [--home MEDIGAN_HOME]

Writes DIR/<package>.zip (<package>/__init__.py, model.safetensors, config.json, README.md) and
DIR/<model_id>.json = {model_id: entry} in medigan's global.json schema (execution / selection /
description, the keys of the real catalogue), with package_link = the zip's absolute local path, so
`medigan.Generators().generate(model_id=...)` runs it offline once the entry is in a medigan home's
config/global.json (`--home` merges it there). The package is self-contained: numpy, torch, safetensors
(and Pillow); it carries a copy of medgan's inference modules (see training/publish/medigan_package.py), so a medigan
user does not need medgan, and the pixels are exactly MedGAN Studio's on the same device and torch build.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import medgan
from medgan import __version__
from medgan.config import ModelConfig
from medgan.files import atomic_path
from medgan.generator import WEIGHTS_FILE, load_weights
from medgan.sources.medigan import OUR_TAG, add_to_catalogue

from . import medigan_package

MEDGAN_DIR = Path(medgan.__file__).parent

DEPENDENCIES = ["numpy", "torch", "safetensors", "Pillow"]
MODALITY_NAMES = {"MR": ["MR", "MRI", "magnetic resonance imaging"], "CT": ["CT", "computed tomography"],
                  "MG": ["MG", "MMG", "Mammography"], "DX": ["DX", "x-ray"], "CR": ["CR", "x-ray"]}
BASE_ARGS = ["model_file", "num_samples", "output_path", "save_images"]

# The package: training/publish/medigan_package.py as its __init__.py, plus these medgan modules in <package>/_medgan/
# (the exact inference code: networks, fast CPU layouts, tiles, latents), so its pixels are MedGAN Studio's.
# `files` (atomic writes, digests) is vendored so that config.py and generator.py may use it.
VENDORED = ("config", "errors", "fastnet", "nets", "stylenet", "stylefast", "generator", "limits", "validation",
            "explore", "files", "latent")
VENDORED_INIT = '"""MedGAN Studio inference modules, vendored into a medigan package (see ../__init__.py)."""\n'


def medigan_id(model_id: str) -> str:
    """medigan imports `models.<id>.<package>`: keep ids to [A-Za-z0-9_]."""
    return "medgan_" + re.sub(r"[^A-Za-z0-9]+", "_", model_id).strip("_").lower()


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("mean", value.get("value"))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def performance(metrics: dict[str, Any]) -> dict[str, Any]:
    """medigan's performance block, with our measured metrics where config.json has them."""
    floor = metrics.get("floor") if isinstance(metrics.get("floor"), dict) else {}
    perf: dict[str, Any] = {k: None for k in ("SSIM", "MSE", "NSME", "PSNR", "IS", "turing_test")}
    perf.update({"FID_no_images": metrics.get("n_synthetic"), "FID": _number(metrics.get("fid")),
                 "FID_ratio": None, "FID_RADIMAGENET": None, "FID_RADIMAGENET_ratio": None,
                 "CLF_delta": None, "SEG_delta": None})
    for key in ("CLF", "SEG", "DET"):
        perf[key] = {"trained_on_fake": {}, "trained_on_real_and_fake": {}, "trained_on_real": {}}
    # Extra keys (medigan ignores unknown ones): the rest of what our evaluation measured.
    perf.update({"KID": _number(metrics.get("kid")), "precision": _number(metrics.get("precision")),
                 "recall": _number(metrics.get("recall")), "FID_real_vs_real_floor": _number(floor.get("fid"))})
    return perf


def medigan_entry(config: ModelConfig, package_name: str, package_link: str) -> dict[str, Any]:
    """One global.json entry in medigan's schema (the keys of the real catalogue's entries)."""
    g, today = config.generator, dt.date.today()
    data = config.training_data
    size = [g.resolution, g.resolution] + ([g.channels] if g.channels > 1 else [])
    organ = [o for o in (config.organ, "brain" if "brain" in config.organ.lower() else "") if o]
    return {
        "execution": {
            "package_name": package_name, "package_link": package_link, "model_name": Path(WEIGHTS_FILE).stem,
            "extension": Path(WEIGHTS_FILE).suffix, "image_size": size, "dependencies": list(DEPENDENCIES),
            "generate_method": {"name": "generate",
                                "args": {"base": list(BASE_ARGS),
                                         "custom": {"seed": 0, "start": 0, "device": "cpu"}},
                                "input_latent_vector_size": g.latent_dim},
        },
        "selection": {
            "performance": performance(config.metrics),
            "use_cases": ["data augmentation", "education", "benchmarking"],
            "organ": list(dict.fromkeys(organ)),
            "modality": MODALITY_NAMES.get(config.modality, [config.modality] if config.modality else []),
            "vendors": [], "centres": [],
            "function": ["noise to image", "image generation", "unconditional generation", "data augmentation"],
            "condition": [],
            "dataset": [str(data["name"])] if data.get("name") else [],
            "augmentations": list(config.training.get("augmentations", []) or []),
            "generates": [" ".join(p for p in (config.organ, config.plane, "slices") if p)],
            "height": g.resolution, "width": g.resolution, "depth": g.channels if g.channels > 1 else None,
            "type": str(config.extra.get("architecture", "DCGAN")),
            "license": config.license.upper() if len(config.license) <= 4 else config.license,
            "dataset_type": "public", "privacy_preservation": None,
            "tags": [t for t in (OUR_TAG, "synthetic", config.modality, config.organ, config.plane,
                                 f"{g.resolution}x{g.resolution}") if t],
            "year": str(today.year),
        },
        "description": {
            "title": f"{config.title or config.id} (MedGAN Studio)",
            "provided_date": today.isoformat(), "trained_date": str(config.training.get("finished_at", "")),
            "provided_after_epoch": config.training.get("epochs"),
            "version": f"medgan {__version__}", "publication": None, "doi": [],
            "inputs": ["seed: default=0; image i depends only on (seed, start + i)",
                       "start: default=0; index of the first image",
                       "device: default='cpu'; the same device gives the same pixels as MedGAN Studio"],
            "comment": (f"{config.description} Synthetic images for research, education and augmentation; not "
                        f"for diagnosis. Exported from MedGAN Studio model '{config.id}'. The zip holds "
                        "__init__.py (generate(), a self-contained DCGAN forward), model.safetensors (no pickle), "
                        "config.json and the model card README.md.").strip(),
        },
    }


def export(folder: str | Path, out: str | Path, model_id: str | None = None,
           home: str | Path | None = None) -> tuple[str, dict[str, Any], Path]:
    """Write the package zip and its entry; returns (medigan model id, entry, zip path)."""
    folder, out = Path(folder), Path(out)
    config = ModelConfig.load(folder)
    load_weights(folder, config.id)  # refuse missing / corrupt / pickle weights before packaging
    mid = model_id or medigan_id(config.id)
    if not re.fullmatch(r"[A-Za-z0-9_]+", mid):
        raise SystemExit(f"--model-id must be letters, digits and underscores (medigan imports it), got {mid!r}")
    out.mkdir(parents=True, exist_ok=True)
    zip_path = (out / f"{mid}.zip").resolve()
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(Path(medigan_package.__file__), f"{mid}/__init__.py")
        zf.writestr(f"{mid}/_medgan/__init__.py", VENDORED_INIT)
        for module in VENDORED:
            zf.write(MEDGAN_DIR / f"{module}.py", f"{mid}/_medgan/{module}.py")
        zf.write(folder / WEIGHTS_FILE, f"{mid}/{WEIGHTS_FILE}")
        zf.write(folder / "config.json", f"{mid}/config.json")
        if (folder / "README.md").is_file():
            zf.write(folder / "README.md", f"{mid}/README.md")
    entry = medigan_entry(config, mid, str(zip_path))
    (out / f"{mid}.json").write_text(json.dumps({mid: entry}, indent=2) + "\n")
    if home:
        add_to_catalogue(home, {mid: entry})
    return mid, entry, zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_medigan", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="model folder (config.json + model.safetensors)")
    parser.add_argument("--out", required=True, help="where to write <id>.zip and <id>.json")
    parser.add_argument("--model-id", help="medigan model id (default: medgan_<folder id>)")
    parser.add_argument("--home", help="also add the entry to this medigan home's config/global.json")
    args = parser.parse_args(argv)
    mid, entry, zip_path = export(args.folder, args.out, args.model_id, args.home)
    print(f"medigan model {mid}: {zip_path} ({zip_path.stat().st_size / 1e6:.2f} MB), entry "
          f"{Path(args.out) / (mid + '.json')}" + (f", registered in {args.home}" if args.home else ""))
    print(f"  medigan: cd <home> && python -c \"from medigan import Generators; "
          f"Generators().generate(model_id='{mid}', num_samples=4, seed=42)\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
