"""One catalogue entry -> a ModelInfo: its kind (noise-to-image, image-to-image, mask-conditioned), image shape,
modality code, published metrics, whether its package is present, and a short revision digest."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .. import NOISE_TO_IMAGE, ModelInfo
from .catalogue import is_offline

IMAGE_TO_IMAGE = "image-to-image"
MASK_CONDITIONED = "mask-conditioned"
PREFIX = "medigan:"
# Free-text modality names of medigan's catalogue -> DICOM modality codes (as medgan's own models use).
MODALITY_CODES = {"mmg": "MG", "mammography": "MG", "mri": "MR", "mr": "MR", "t1": "MR", "t2": "MR",
                  "dce-mri": "MR", "x-ray": "DX", "xray": "DX", "ct": "CT", "endoscopy": "ES"}
# Generate-argument names that mean "give me an input image / mask" (image-to-image, mask-conditioned).
INPUT_ARGS = ("input_path", "image_paths_input", "F_img_path", "T1_img_path")
OUR_TAG = "medgan-studio"  # selection.tags marker of packages written by training.publish.export_medigan


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


def link_host(link: str) -> str:
    """The host of a package link, for messages."""
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
    link = execution.get("package_link")
    if not package_present(home, model_id, execution):
        if is_url(link):
            notes.append(f"package not downloaded yet (from {link_host(link)}): downloads on first use "
                         "(needs internet)" + ("; offline, so it cannot run now" if is_offline() else ""))
        elif link and not Path(str(link)).is_file():
            notes.append("package file is missing")
    if kind == NOISE_TO_IMAGE:
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
