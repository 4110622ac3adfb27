"""Parquet shards: `--format parquet` writes a Hugging Face dataset repo instead of shard folders.

    DIR/README.md                              the dataset card (medgan.dataset.card), written when complete
    DIR/dataset.json                           the settings, as for every format (synthetic: true)
    DIR/data/train-KKKKK-of-NNNNN.parquet      images K*shard_size … (K+1)*shard_size-1, one row each

Columns: `image` (PNG bytes in the `datasets` Image layout, a struct {bytes, path}; each PNG's text chunks say
Synthetic=true, model, revision, seed, index, class), `label` (the class index, a ClassLabel with the model's
class names; conditional models only), `seed`, `index`, `truncation`, `model_id`, `model_revision` and
`synthetic` (always true). The feature types also ride in the schema metadata (key `huggingface`, as `datasets`
writes them), so `datasets` reads Image and ClassLabel from the files alone. Written with pyarrow only; no
timestamps anywhere, so a re-run writes the same bytes. `job` below is a medgan.dataset.shards.Job (this
module does not import shards: shards imports it).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MedganError
from ..export import labelled, png_bytes, write_error
from ..files import atomic_path

DATA_DIR = "data"
SPLIT = "train"
DATA_FILES = f"{DATA_DIR}/{SPLIT}-*"  # the card's `configs` pattern
ROW_GROUP = 100  # rows per row group: what `datasets` uses for image data (the Hub viewer reads by row group)
HF_METADATA_KEY = b"huggingface"


def parquet_name(k: int, num_shards: int) -> str:
    return f"{SPLIT}-{k:05d}-of-{num_shards:05d}.parquet"


def parquet_path(job: Any, k: int) -> Path:
    return Path(job.out) / DATA_DIR / parquet_name(k, job.num_shards)


def features(classes: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """The columns as `datasets` Features (their JSON form, `Features.to_dict()`), in column order."""
    value = {"_type": "Value"}
    out: dict[str, dict[str, Any]] = {"image": {"_type": "Image"}}
    if classes:
        out["label"] = {"names": list(classes), "_type": "ClassLabel"}
    out.update(seed={**value, "dtype": "int64"}, index={**value, "dtype": "int64"},
               truncation={**value, "dtype": "float64"}, model_id={**value, "dtype": "string"},
               model_revision={**value, "dtype": "string"}, synthetic={**value, "dtype": "bool"})
    return out


def arrow_schema(classes: tuple[str, ...] | list[str]):
    import pyarrow as pa

    types = {"image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]), "label": pa.int64(),
             "seed": pa.int64(), "index": pa.int64(), "truncation": pa.float64(), "model_id": pa.string(),
             "model_revision": pa.string(), "synthetic": pa.bool_()}
    feats = features(classes)
    meta = {HF_METADATA_KEY: json.dumps({"info": {"features": feats}}).encode()}
    return pa.schema([(name, types[name]) for name in feats], metadata=meta)


def shard_table(job: Any, arrays: np.ndarray, labels: np.ndarray, start: int):
    """One shard's rows: PNG bytes carrying their provenance, and the columns above."""
    import pyarrow as pa

    n = len(arrays)
    prov = job.provenance({start + i: job.classes[int(c)] for i, c in enumerate(labels)})
    images = [{"bytes": png_bytes(a, prov.for_index(start + i)), "path": None}
              for i, a in enumerate(labelled(arrays, job.label))]
    columns: dict[str, Any] = {"image": images}
    if job.classes:
        columns["label"] = np.asarray(labels, dtype=np.int64)
    columns.update(seed=np.full(n, job.seed, np.int64), index=np.arange(start, start + n, dtype=np.int64),
                   truncation=np.full(n, job.truncation, np.float64), model_id=[job.model_id] * n,
                   model_revision=[job.revision] * n, synthetic=np.ones(n, bool))
    return pa.Table.from_pydict(columns, schema=arrow_schema(job.classes))


def parquet_bytes(table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    # No compression: PNG bytes are compressed already; the small columns are a few bytes per row.
    pq.write_table(table, buffer, row_group_size=ROW_GROUP, compression="none")
    return buffer.getvalue()


def write_parquet_shard(job: Any, arrays: np.ndarray, labels: np.ndarray, k: int) -> Path:
    """Shard k as one parquet file, written to a temp name in data/ and renamed when complete."""
    path = parquet_path(job, k)
    data = parquet_bytes(shard_table(job, arrays, labels, job.shard_range(k).start))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise write_error(path, exc) from None
    return path


def parquet_shard_complete(job: Any, k: int) -> bool:
    """The file is there, its footer reads, and it holds shard k's rows (a rename only ever lands whole files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(parquet_path(job, k)).num_rows == len(job.shard_range(k))
    except (OSError, pa.ArrowException):
        return False


def shard_files(folder: str | Path) -> list[Path]:
    """The data files of a parquet dataset folder, in order; a MedganError when there are none."""
    files = sorted((Path(folder) / DATA_DIR).glob(f"{SPLIT}-*.parquet"))
    if not files:
        raise MedganError(f"no {DATA_FILES}.parquet in {Path(folder).name}: not a parquet dataset of medgan "
                          "(python -m medgan.dataset MODEL --format parquet …)")
    return files


def data_sizes(folder: str | Path) -> tuple[int, int]:
    """(uncompressed bytes of every row group, bytes of the files): the card's num_bytes and download_size."""
    import pyarrow.parquet as pq

    files = shard_files(folder)
    meta = [pq.read_metadata(path) for path in files]
    return (sum(m.row_group(g).total_byte_size for m in meta for g in range(m.num_row_groups)),
            sum(path.stat().st_size for path in files))


__all__ = ["DATA_DIR", "DATA_FILES", "HF_METADATA_KEY", "ROW_GROUP", "SPLIT", "arrow_schema", "data_sizes", "features",
           "parquet_bytes", "parquet_name", "parquet_path", "parquet_shard_complete", "shard_files", "shard_table",
           "write_parquet_shard"]
