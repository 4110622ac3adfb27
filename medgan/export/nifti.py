"""NIfTI export: one NIfTI-1 volume stacking the batch, marked synthetic in its header.

Orientation: data has shape [W, H, count] (grayscale; [W, H, count, C] for colour) with
data[x, y, k] = image_k[y, x], i.e. `volume[:, :, k].T` is image k as a PNG shows it. The affine has a
negative y step, so image row 0 (the top) gets the largest y and RAS viewers show it at the top.
Voxel size: the nominal pixel spacing of medgan.export.spacing, and 1 mm between images (they are independent
samples, not slices of one subject). descrip (80 chars) and intent_name (16) say SYNTHETIC; a JSON
comment extension carries the full provenance.
"""
from __future__ import annotations

import json
from typing import Any

import nibabel as nib
import numpy as np

from .base import SOFTWARE, ExportFile, Provenance, file_stem, labelled
from .spacing import nominal_pixel_spacing

INTENT_NAME = "SYNTHETIC"


def nifti_image(arrays: np.ndarray, prov: Provenance, start: int, spacing: float, label: bool) -> nib.Nifti1Image:
    n, h, w = arrays.shape[:3]
    data = np.ascontiguousarray(np.swapaxes(np.moveaxis(arrays, 0, 2), 0, 1))  # [n,H,W(,C)] -> [W,H,n(,C)]
    affine = np.diag([spacing, -spacing, 1.0, 1.0])
    affine[1, 3] = spacing * (h - 1)  # row 0 at the top (largest y)
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_data_dtype(np.uint8)
    header.set_xyzt_units("mm")
    header.set_intent("none", name=INTENT_NAME)
    header["descrip"] = f"SYNTHETIC {SOFTWARE} {prov.model_id} seed {prov.seed} idx {start}-{start + n - 1}"[:80]
    header["aux_file"] = "SYNTHETIC not a patient"[:24]
    header["cal_min"], header["cal_max"] = 0, 255
    image.set_qform(affine, code=2)
    image.set_sform(affine, code=2)
    comment = {"synthetic": True, "software": f"{SOFTWARE} {prov.version}", "model": prov.model_id,
               "revision": prov.revision, "seed": prov.seed, "indices": [start, start + n - 1],
               "created_utc": prov.created_utc, "labelled": bool(label),
               "images": {str(i): prov.image_facts(i) for i in range(start, start + n) if prov.image_facts(i)},
               "orientation": "data[x, y, k] = image_k[y, x]",
               "note": "Synthetic images; not of any patient; not for diagnosis. Spacing is nominal."}
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(comment).encode()))
    return image


def nifti_files(arrays: np.ndarray, prov: Provenance, start: int, label: bool = False, info: Any = None,
                config: Any = None, **_: Any) -> list[ExportFile]:
    """One uncompressed .nii (the zip compresses it) holding every image of the batch."""
    modality = getattr(info, "modality", "") or getattr(config, "modality", "") or prov.modality
    spacing = nominal_pixel_spacing(int(arrays.shape[1]), modality, config)
    image = nifti_image(labelled(arrays, label), prov, start, spacing, label)
    name = f"{file_stem(prov.model_id, prov.seed, start)}_n{len(arrays)}.nii"
    return [ExportFile(name, image.to_bytes(), tuple(range(start, start + len(arrays))))]
