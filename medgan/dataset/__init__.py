"""Large synthetic datasets: a resumable, sharded, parallel export CLI, and two torch Datasets.

    python -m medgan.dataset MODEL --count 100000 --out DIR [--format png|npz|dicom|nifti|parquet]
                             [--shard-size 1000] [--seed 0] [--truncation PSI] [--class NAME]
                             [--workers K] [--threads T] [--label]
    torchrun --nnodes N --nproc-per-node P -m medgan.dataset MODEL ...   # rank r writes shards r, r+W, …

Image i of a dataset is `Generator.generate(count=1, seed=S, start=i, truncation=PSI, label=CLASS)`: any
shard regenerates exactly, and no file embeds a wall-clock time (DICOM UIDs derive from model, revision, seed,
label and index), so a re-run writes the same bytes. Layout (`--format parquet`: a Hugging Face dataset repo
instead, see medgan.dataset.parquet):

    DIR/dataset.json                 model, revision, seed, count, format, shard size, synthetic: true
    DIR/README.txt                   what the data is and is not
    DIR/shard-00000/                 images 0 … shard_size-1 (png/dcm files, or one .npz/.nii)
    DIR/shard-00000/shard.json       completion marker: files, sizes, indices (written before the rename)
    DIR/manifest.csv                 index,seed,file,item,shard for every image (when all shards are done)

A shard is written to a temp folder, then renamed; on a re-run complete shards (marker present, every
file at its recorded size) are skipped and anything else is redone. Ranks only touch their own shards, so
machines sharing DIR need no coordination; the last rank to finish writes manifest.csv.

Modules: `shards` (the export: plan, shard writer, dataset.json / manifest, worker processes), `parquet`
(parquet shards), `card` (the parquet dataset's card), `torch_datasets` (SyntheticDataset, ExportedDataset,
ParquetDataset), `cli` (the command line; `__main__` runs it).
"""
from __future__ import annotations

from .card import DATA_CARD, dataset_command, render_card
from .cli import build_parser, main
from .parquet import DATA_DIR, features, shard_files
from .shards import (DATASET_JSON, FORMATS, IDENTITY_KEYS, MANIFEST, MANIFEST_FIELDS, MARKER, PARQUET, ExportSummary,
                     Job, clean_temp, dataset_info, dataset_readme, export_dataset, init_folder, load_generator,
                     model_identity, plan, rank_from_env, shard_complete, shard_name, shards_for_rank, supports_start,
                     weights_revision, write_manifest, write_shard)
from .torch_datasets import ExportedDataset, ParquetDataset, SyntheticDataset, to_float

__all__ = ["DATASET_JSON", "DATA_CARD", "DATA_DIR", "FORMATS", "IDENTITY_KEYS", "MANIFEST", "MANIFEST_FIELDS",
           "MARKER", "PARQUET", "ExportSummary", "ExportedDataset", "Job", "ParquetDataset", "SyntheticDataset",
           "build_parser", "clean_temp", "dataset_command", "dataset_info", "dataset_readme", "export_dataset",
           "features", "init_folder", "load_generator", "main", "model_identity", "plan", "rank_from_env",
           "render_card", "shard_complete", "shard_files", "shard_name", "shards_for_rank", "supports_start",
           "to_float", "weights_revision", "write_manifest", "write_shard"]
