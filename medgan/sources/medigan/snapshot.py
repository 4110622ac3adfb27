"""A snapshot of medigan's catalogue shipped inside medgan (`snapshot.json` beside this file), so a fresh,
offline install lists medigan's models before any `config/global.json` has been downloaded.

Facts only: ids, modality, organ, image size, architecture, dataset, licence, published metrics, dependencies,
package link — copied from medigan's `config/global.json`. medigan's description prose is not copied; each entry
gets a short title and description of our own, generated from those facts. The snapshot is in medigan's
schema ({model_id: {execution, selection, description}}) so the rest of the source reads it like global.json.

Build (deterministic: the same input gives the same bytes; no timestamps):

    python -m medgan.sources.medigan.snapshot --build ../shared/reference/medigan-catalogue.json
    python -m medgan.sources.medigan.snapshot --check ../shared/reference/medigan-catalogue.json
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ...files import atomic_write
from .catalogue import valid_catalogue
from .entries import classify, image_shape, modality_code

SNAPSHOT = Path(__file__).resolve().with_name("snapshot.json")
FORMAT = 1
ATTRIBUTION = ("Model facts from medigan's catalogue (config/global.json of medigan 1.0.0, "
               "https://github.com/RichardObi/medigan, MIT licence; by Richard Osuala, Grzegorz Skorupko, "
               "Noussair Lazrak and contributors). Titles and descriptions are MedGAN Studio's own, generated "
               "from those facts; the metrics are the authors' published numbers, not measured here.")
PACKAGE_SIZE_NOTE = "medigan's catalogue does not state package sizes; they are known once downloaded"
EXECUTION_KEYS = ("package_name", "package_link", "model_name", "extension", "image_size", "dependencies",
                  "generate_method")
SELECTION_KEYS = ("type", "modality", "organ", "dataset", "dataset_type", "generates", "function", "condition",
                  "use_cases", "height", "width", "depth", "license", "year")
MODALITY_WORDS = {"MG": "mammography", "MR": "MRI", "DX": "X-ray", "CT": "CT", "ES": "endoscopy"}


def _first(value: object) -> str:
    items = [str(v) for v in value if v not in (None, "")] if isinstance(value, list) else []
    return items[0] if items else ""


def _numbers(performance: object) -> dict[str, float | int]:
    """The numeric published metrics (FID, FID_RADIMAGENET, SSIM, …); nulls and empty sub-tables dropped."""
    if not isinstance(performance, dict):
        return {}
    return {k: v for k, v in sorted(performance.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def describe(model_id: str, entry: dict[str, Any]) -> tuple[str, str]:
    """Our own (title, description) of an entry, from its facts only."""
    selection = entry.get("selection") or {}
    arch = str(selection.get("type") or "GAN")
    height, width, _ = image_shape(entry)
    size = (f"{height}²" if height == width else f"{height}×{width}") if height and width else "unknown size"
    modality = modality_code([str(m) for m in selection.get("modality") or [] if m])
    subject = _first(selection.get("generates")) or _first(selection.get("organ")) or "images"
    dataset = ", ".join(str(d) for d in selection.get("dataset") or [] if d) or "dataset not stated"
    number = model_id.split("_", 1)[0]
    title = f"{arch}: {subject} ({dataset}; medigan {number})"
    text = f"{arch}, {size} {MODALITY_WORDS.get(modality, modality or 'medical')} {subject} ({dataset}); " \
           f"{classify(entry)}."
    fid = _numbers((selection.get("performance") or {})).get("FID")
    if fid is not None:
        text += f" Published FID {fid:g} (the authors' number, not measured here)."
    return title, text


def snapshot_entry(model_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One catalogue entry reduced to its facts, with our own title and description."""
    execution, selection = entry.get("execution") or {}, entry.get("selection") or {}
    title, text = describe(model_id, entry)
    dois = [d for d in (entry.get("description") or {}).get("doi") or [] if isinstance(d, str) and d.strip()]
    return {
        "execution": {k: execution[k] for k in EXECUTION_KEYS if k in execution},
        "selection": {**{k: selection[k] for k in SELECTION_KEYS if k in selection},
                      "performance": _numbers(selection.get("performance"))},
        "description": {"title": title, "comment": text, "doi": dois},
    }


def build(catalogue: dict[str, Any]) -> dict[str, Any]:
    """The snapshot document for a medigan catalogue ({model_id: entry}); raises ValueError if it is not one."""
    if not valid_catalogue(catalogue):
        raise ValueError("not a medigan catalogue (expected {model_id: {execution, selection, description}})")
    canonical = json.dumps(catalogue, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return {"format": FORMAT, "attribution": ATTRIBUTION, "package_sizes": PACKAGE_SIZE_NOTE,
            "source_sha256": hashlib.sha256(canonical).hexdigest(), "count": len(catalogue),
            "models": {k: snapshot_entry(k, catalogue[k]) for k in sorted(catalogue)}}


def render(document: dict[str, Any]) -> str:
    """The snapshot's bytes: sorted keys, fixed indentation, a final newline."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[int, int]) -> dict[str, dict[str, Any]]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    models = document.get("models") if isinstance(document, dict) else None
    if not valid_catalogue(models):
        raise ValueError(f"{Path(path).name} is not a medigan catalogue snapshot")
    return models


def load_snapshot(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The shipped snapshot's models ({model_id: entry}); {} when the file is missing or unreadable."""
    path = Path(path or SNAPSHOT)
    try:
        st = path.stat()
        return dict(_load(str(path), (st.st_mtime_ns, st.st_size)))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", metavar="GLOBAL_JSON", help="medigan's global.json; writes the snapshot")
    parser.add_argument("--check", metavar="GLOBAL_JSON", help="exit 1 unless the snapshot matches this input")
    parser.add_argument("--out", default=str(SNAPSHOT), help=f"snapshot path (default {SNAPSHOT.name} here)")
    args = parser.parse_args(argv)
    source = args.build or args.check
    if not source:
        parser.error("give --build or --check")
    try:
        text = render(build(json.loads(Path(source).read_text(encoding="utf-8"))))
    except (OSError, ValueError) as exc:
        print(f"cannot read {source}: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'differs from a rebuild'}")
        return 0 if same else 1
    atomic_write(out, text)
    print(f"wrote {out} ({len(json.loads(text)['models'])} models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
