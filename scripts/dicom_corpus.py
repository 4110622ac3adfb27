"""A synthetic DICOM corpus for ingestion benchmarks and tests: no patient data, only drawn phantoms.

    python -m scripts.dicom_corpus OUT --files 10000 [--size 256] [--per-series 40] [--seed 0]

OUT/SYN-0001/slice-000.dcm …: series of `--per-series` single-frame 16-bit MR slices of `--size`², one series
per made-up subject (PatientID SYN-0001, …; PatientName SYNTHETIC^PHANTOM), with the headers a scanner writes
(modality, spacing, position, orientation, instance number, UIDs). Each slice is an ellipse "head" whose size
follows the slice's level, with a brighter inner ellipse and noise; the same arguments give the same files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np



def uid(*parts: object) -> str:
    """A `2.25.` UID derived from `parts` (reproducible; needs no registered root)."""
    from pydicom.uid import generate_uid

    return generate_uid(prefix=None, entropy_srcs=["medgan-synthetic-corpus", *map(str, parts)])


def phantom(size: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """uint16 [size, size]: a head-like ellipse of radius by `level` (0..1 through the series) with noise."""
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    radius = 0.35 + 0.5 * np.sin(np.pi * (0.1 + 0.8 * level))
    outer = (xx / (0.8 * radius)) ** 2 + (yy / radius) ** 2 <= 1
    inner = (xx / (0.55 * radius)) ** 2 + (yy / (0.7 * radius)) ** 2 <= 1
    img = 400.0 * outer + 500.0 * inner + rng.normal(0, 30, (size, size))
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_slice(path: Path, pixels: np.ndarray, subject: str, series: int, k: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = uid(series, k)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(series, "study"), uid(series, "series")
    ds.PatientID, ds.PatientName, ds.Modality = subject, "SYNTHETIC^PHANTOM", "MR"
    ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(k)], [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_corpus(out: str | Path, files: int, size: int = 256, per_series: int = 40, seed: int = 0) -> Path:
    """Write `files` slices under `out` (series of `per_series`, the last one shorter); returns `out`."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    for series in range(-(-files // per_series)):
        subject = f"SYN-{series + 1:04d}"
        folder = out / subject
        folder.mkdir(parents=True, exist_ok=True)
        count = min(per_series, files - series * per_series)
        for k in range(count):
            write_slice(folder / f"slice-{k:03d}.dcm", phantom(size, k / max(1, per_series - 1), rng), subject,
                        series + 1, k)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.dicom_corpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write (created)")
    ap.add_argument("--files", type=int, required=True, help="number of DICOM files (slices)")
    ap.add_argument("--size", type=int, default=256, help="rows and columns of each slice (default 256)")
    ap.add_argument("--per-series", type=int, default=40, help="slices per series / subject (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.files < 1 or args.size < 8 or args.per_series < 1:
        ap.error("--files and --per-series must be >= 1, --size >= 8")
    make_corpus(args.out, args.files, args.size, args.per_series, args.seed)
    print(f"wrote {args.files} DICOM files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
