"""Slices as files: a preview grid, and every slice as a PNG/JPG with manifest.csv (real images, not synthetic)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from medgan.files import atomic_path
from medgan.imaging import grid

from .dataset import DatasetError, SliceDataset
from .labels import LEVEL_NAMES, PLANES


def save_preview(ds: SliceDataset, path: str | Path, n: int = 16, cols: int = 4, scale: int = 2) -> Path:
    """A grid of n slices spread evenly through the dataset, as PNG."""
    pick = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)
    sheet = grid(ds.images[pick, 0], cols=cols, pad=2, fill=64)
    img = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.Resampling.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return Path(path)


EXPORT_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}
MANIFEST_COLUMNS = ("file", "source", "subject", "split", "axis", "plane", "index", "level", "level_label")
JPEG_QUALITY = 95


def export_slices(ds: SliceDataset, folder: str | Path, fmt: str = "png", *, quality: int = JPEG_QUALITY) -> Path:
    """Write every slice of `ds` as an 8-bit grayscale image file, `<split>/<row>.png|jpg` (row = position in
    the dataset, 6 digits), plus `manifest.csv` (MANIFEST_COLUMNS, one row per file). These are REAL slices: the
    files carry no "synthetic" mark. Names hold no subject or file name; `source`/`subject` are the dataset's
    own (pseudonymise a user dataset first: `needs_pseudonyms` refuses). The folder appears whole or not at all
    (written beside it, then renamed); an existing non-empty folder is refused."""
    if str(fmt).lower() not in EXPORT_FORMATS:
        raise DatasetError(f"unknown slice format {fmt!r}; choose from png, jpg")
    if ds.needs_pseudonyms:
        raise DatasetError("this dataset still holds original subject ids and file paths; pseudonymise it "
                           "before exporting slices (training.data.dataset.pseudonymise)")
    pil_format, suffix = EXPORT_FORMATS[str(fmt).lower()]
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DatasetError(f"{folder} already exists and is not an empty folder; remove it or choose another")
    folder.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_path(folder) as tmp:
        for i, row in enumerate(_manifest_rows(ds, suffix)):
            path = tmp / row["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            options = {"quality": int(quality)} if pil_format == "JPEG" else {}
            Image.fromarray(ds.images[i, 0], mode="L").save(path, pil_format, **options)
            rows.append(row)
        _write_manifest(tmp / "manifest.csv", rows)  # then os.replace: a new name, or onto the empty folder
    return folder


def _manifest_rows(ds: SliceDataset, suffix: str) -> Iterable[dict]:
    """One manifest row per slice, in dataset order; labels named per slice by its own axis."""
    for i in range(len(ds)):
        axis, level = int(ds.axis[i]), int(ds.level[i])
        names = LEVEL_NAMES.get(axis)
        yield {"file": f"{ds.split[i]}/{i:06d}{suffix}", "source": str(ds.source[i]), "subject": str(ds.subject[i]),
               "split": str(ds.split[i]), "axis": axis, "plane": PLANES.get(axis, "native"),
               "index": int(ds.index[i]), "level": level,
               "level_label": names[level] if names and 0 <= level < len(names) else ""}


def _write_manifest(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_manifest(folder: str | Path) -> list[dict]:
    """The rows of an exported folder's manifest.csv (values as strings)."""
    import csv

    with open(Path(folder) / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
