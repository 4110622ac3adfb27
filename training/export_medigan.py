"""Export a medgan model folder as a medigan model package (zip + global.json entry).

    python -m training.export_medigan weights/<id> --out DIR [--model-id ID] [--home MEDIGAN_HOME]

Writes DIR/<package>.zip (<package>/__init__.py, model.safetensors, config.json, README.md) and
DIR/<model_id>.json = {model_id: entry} in medigan's global.json schema (execution / selection /
description, the keys of the real catalogue), with package_link = the zip's absolute local path, so
`medigan.Generators().generate(model_id=...)` runs it offline once the entry is in a medigan home's
config/global.json (`--home` merges it there). The package is self-contained: numpy, torch, safetensors
(and Pillow to save PNGs); it re-implements the DCGAN forward instead of importing medgan, so a medigan
user does not need medgan. Same device -> same pixels as medgan's Generator for the same seed.
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

from medgan import __version__
from medgan.config import ModelConfig
from medgan.generator import WEIGHTS_FILE, load_weights
from medgan.sources.medigan import OUR_TAG, add_to_catalogue

DEPENDENCIES = ["numpy", "torch", "safetensors", "Pillow"]
MODALITY_NAMES = {"MR": ["MR", "MRI", "magnetic resonance imaging"], "CT": ["CT", "computed tomography"],
                  "MG": ["MG", "MMG", "Mammography"], "DX": ["DX", "x-ray"], "CR": ["CR", "x-ray"]}
BASE_ARGS = ["model_file", "num_samples", "output_path", "save_images"]

# The package's __init__.py, shipped as text inside the zip.
PACKAGE_INIT = r'''
"""A MedGAN Studio generator packaged for medigan (https://github.com/RichardObi/medigan).

Synthetic images only: for research, education and augmentation, NOT for diagnosis.

    generate(model_file, num_samples, output_path, save_images, seed=0, start=0, device="cpu")

Self-contained: needs numpy, torch and safetensors (Pillow to save PNGs), not medgan. The weights are
`model.safetensors` (no pickle); the architecture is read from its metadata (config.json beside it too).
Deterministic: image i depends only on (seed, start + i) - its latent comes from numpy's PCG64 seeded with
[seed, index], exactly as medgan's Generator, and the forward pass folds BatchNorm the same way, so on the
same device the pixels equal MedGAN Studio's for the same seed.
"""
import json
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

BATCH_SIZE = 64  # same chunking as medgan's Generator
BN_EPS = 1e-5    # torch.nn.BatchNorm2d default, used by medgan's DCGAN
_next_index = {}  # save_images=True: medigan calls us once per batch_<n> folder; indices continue across them


def latents(seed, count, latent_dim, start=0):
    """Latent of image `index` = standard normal from numpy PCG64 seeded [seed, index] (medgan's scheme)."""
    out = np.empty((count, latent_dim), dtype=np.float32)
    for row, index in enumerate(range(start, start + count)):
        out[row] = np.random.default_rng([seed, index]).standard_normal(latent_dim, dtype=np.float32)
    return out


def _read(model_file):
    from safetensors import safe_open

    with safe_open(str(model_file), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    if "medgan_config" in meta:
        config = json.loads(meta["medgan_config"])
    else:
        with open(os.path.join(os.path.dirname(str(model_file)), "config.json")) as f:
            config = json.load(f)
    return config, state


def _layers(state):
    """[(weight, bias, stride, padding, activation)] with each BatchNorm folded into the conv before it."""
    convs = sorted(int(m.group(1)) for k in state for m in [re.fullmatch(r"main\.(\d+)\.weight", k)]
                   if m and state[k].ndim == 4)
    layers = []
    for n, i in enumerate(convs):
        weight, bias = state[f"main.{i}.weight"], None
        if f"main.{i + 1}.running_var" in state:
            bn = {k: state[f"main.{i + 1}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
            scale = bn["weight"] / torch.sqrt(bn["running_var"] + BN_EPS)
            weight = weight * scale.view(1, -1, 1, 1)
            bias = bn["bias"] - bn["running_mean"] * scale
        last = n == len(convs) - 1
        layers.append((weight, bias, 1 if n == 0 else 2, 0 if n == 0 else 1, torch.tanh if last else torch.relu))
    return layers


def _to_uint8(images):
    pixels = ((images.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    return pixels[:, 0] if pixels.shape[1] == 1 else pixels.transpose(0, 2, 3, 1)


def sample(model_file, num_samples, seed=0, start=0, device="cpu"):
    """uint8 array [n, H, W] (grayscale) or [n, H, W, 3]: images start..start+n-1 of `seed`."""
    config, state = _read(model_file)
    latent_dim = int(config["generator"]["latent_dim"])
    layers = [(w.to(device), None if b is None else b.to(device), s, p, act) for w, b, s, p, act in _layers(state)]
    z = torch.from_numpy(latents(int(seed), int(num_samples), latent_dim, int(start)))
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(z), BATCH_SIZE):
            x = z[i:i + BATCH_SIZE].to(device).view(-1, latent_dim, 1, 1)
            for weight, bias, stride, padding, act in layers:
                x = act(F.conv_transpose2d(x, weight, bias, stride, padding))
            chunks.append(x)
    if not chunks:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return _to_uint8(torch.cat(chunks))


def generate(model_file, num_samples, output_path, save_images, seed=0, start=0, device="cpu", **kwargs):
    """medigan's entry point: a list of uint8 arrays, or (save_images) PNG files in output_path."""
    seed, start, num_samples = int(seed), int(start), int(num_samples)
    if not save_images:
        return list(sample(model_file, num_samples, seed, start, device))
    # medigan saves in batches (output_path = …/batch_<n>/) without telling us the batch offset.
    parent, folder = os.path.split(os.path.normpath(str(output_path)))
    batch = re.fullmatch(r"batch_(\d+)", folder)
    key = (os.path.abspath(parent), str(model_file), seed)
    first = start if not batch or batch.group(1) == "0" else _next_index.get(key, start)
    _next_index[key] = first + num_samples
    if num_samples <= 0:
        return None
    from PIL import Image

    os.makedirs(str(output_path), exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(__name__).rsplit(".", 1)[-1])
    for offset, array in enumerate(sample(model_file, num_samples, seed, first, device)):
        Image.fromarray(array).save(os.path.join(str(output_path),
                                                 f"synthetic_{name}_seed{seed}_{first + offset:05d}.png"))
    return None
'''


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
    tmp = zip_path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{mid}/__init__.py", PACKAGE_INIT.lstrip())
        zf.write(folder / WEIGHTS_FILE, f"{mid}/{WEIGHTS_FILE}")
        zf.write(folder / "config.json", f"{mid}/config.json")
        if (folder / "README.md").is_file():
            zf.write(folder / "README.md", f"{mid}/README.md")
    tmp.replace(zip_path)
    entry = medigan_entry(config, mid, str(zip_path))
    (out / f"{mid}.json").write_text(json.dumps({mid: entry}, indent=2) + "\n")
    if home:
        add_to_catalogue(home, {mid: entry})
    return mid, entry, zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
