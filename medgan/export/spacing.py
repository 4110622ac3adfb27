"""Nominal pixel spacing (DICOM PixelSpacing, NIfTI voxel size) and DICOM modality codes; no pydicom needed.

The models are not trained with calibrated geometry, so spacing is nominal: config.json's `pixel_spacing_mm`
if set, else its `field_of_view_mm` / resolution, else a typical field of view for the modality
(NOMINAL_FOV_MM: MR 240 mm, CT 350 mm, CR/DX 430 mm, …; 240 mm otherwise) / resolution.
"""
from __future__ import annotations

from typing import Any

NOMINAL_FOV_MM = {"MR": 240.0, "CT": 350.0, "PT": 350.0, "NM": 400.0, "CR": 430.0, "DX": 430.0, "MG": 240.0}
DEFAULT_FOV_MM = 240.0
MODALITIES = {"AR", "AU", "BI", "CR", "CT", "DG", "DX", "ECG", "ES", "GM", "IO", "IVOCT", "IVUS", "KER", "MG",
              "MR", "NM", "OCT", "OP", "OPT", "OT", "PT", "PX", "RF", "RG", "SM", "TG", "US", "XA", "XC"}
ALIASES = {"MRI": "MR", "PET": "PT", "XRAY": "DX", "X-RAY": "DX", "CXR": "DX", "MAMMOGRAPHY": "MG",
           "ULTRASOUND": "US", "OCTA": "OCT", "FUNDUS": "OP", "HISTOLOGY": "SM", "DERMOSCOPY": "XC"}


def dicom_modality(modality: str | None) -> str:
    """A DICOM Modality code from free-text metadata; OT (other) when it is not one."""
    code = (modality or "").strip().upper()
    code = ALIASES.get(code, code)
    return code if code in MODALITIES else "OT"


def nominal_pixel_spacing(resolution: int, modality: str = "", config: Any = None) -> float:
    """Millimetres per pixel (rows = columns); see the module docstring for where it comes from."""
    extra = getattr(config, "extra", None) or {}
    for key, per_pixel in (("pixel_spacing_mm", True), ("field_of_view_mm", False)):
        value = extra.get(key)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value) if per_pixel else float(value) / resolution
    return NOMINAL_FOV_MM.get(dicom_modality(modality), DEFAULT_FOV_MM) / resolution
