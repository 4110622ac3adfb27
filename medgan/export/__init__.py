"""Writers for generated batches. Every file says it is synthetic: names, embedded metadata, metadata.json.

Modules: `base` (Provenance, ExportFile, file names, the burnt-in label, metadata.json / README.txt, the
WRITERS registry, write_zip), one module per format (`png`, `npz`, `dicom`, `nifti`) and `spacing` (nominal
pixel spacing, shared by DICOM and NIfTI). Nothing here imports pydicom or nibabel until a DICOM or NIfTI
export is asked for. A new format: a module with a writer `(arrays, prov, start, label=False, **options) ->
[ExportFile]`, registered below, and a line in base.FORMAT_NOTES.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import (FORMAT_NOTES, SOFTWARE, WRITERS, ZIP_EPOCH, ExportError, ExportFile, Provenance, atomic_write,
                   check_format, file_stem, label_image, labelled, metadata, readme, register, render, write_error,
                   write_zip)
from .npz import npz_bytes, npz_files
from .png import png_bytes, png_files
from .spacing import dicom_modality, nominal_pixel_spacing


def dicom_files(arrays: np.ndarray, prov: Provenance, start: int, **options: Any) -> list[ExportFile]:
    """One DICOM series (medgan.export.dicom); pydicom is imported on the first call only."""
    from .dicom import dicom_files as write
    return write(arrays, prov, start, **options)


def nifti_files(arrays: np.ndarray, prov: Provenance, start: int, **options: Any) -> list[ExportFile]:
    """One NIfTI-1 volume (medgan.export.nifti); nibabel is imported on the first call only."""
    from .nifti import nifti_files as write
    return write(arrays, prov, start, **options)


# The app's format choices, in this order.
for _fmt, _writer in (("png", png_files), ("dicom", dicom_files), ("nifti", nifti_files), ("npz", npz_files)):
    register(_fmt, _writer)
del _fmt, _writer

__all__ = ["FORMAT_NOTES", "SOFTWARE", "WRITERS", "ZIP_EPOCH", "ExportError", "ExportFile", "Provenance",
           "atomic_write", "check_format", "dicom_files", "dicom_modality", "file_stem", "label_image", "labelled",
           "metadata", "nifti_files", "nominal_pixel_spacing", "npz_bytes", "npz_files", "png_bytes", "png_files",
           "readme", "register", "render", "write_error", "write_zip"]
