"""Three torch Datasets: images generated on the fly (SyntheticDataset), an exported folder of files
(ExportedDataset) and a parquet dataset (ParquetDataset, items with their class label).

All give float32 tensors [C, H, W] in [-1, 1] (the generator's scale) and work with `DataLoader(num_workers>0)`.
"""
from __future__ import annotations

import csv
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InvalidArgumentError, MedganError
from ..validation import check_count, check_seed
from .parquet import shard_files
from .shards import DATASET_JSON, MANIFEST, PARQUET, load_generator, supports_start


def to_float(array: np.ndarray) -> torch.Tensor:
    """uint8 [H, W] or [H, W, C] -> float32 [C, H, W] in [-1, 1] (the generator's own scale)."""
    t = torch.from_numpy(np.asarray(array, dtype=np.float32) / np.float32(127.5) - np.float32(1.0))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


class SyntheticDataset(Dataset):
    """Images generated on the fly: item i = the generator's float output for (seed, index i).

    Returns float32 tensors [C, H, W] in [-1, 1] (tanh output, exactly `generate(1, seed, start=i,
    output_type="pt")[0]`), passed through `transform` if given. `model` is a model id, a model folder path
    or a loaded Generator. Picklable (DataLoader num_workers > 0): each worker loads its own copy.
    """

    def __init__(self, model: Any, length: int, seed: int = 0, transform: Callable | None = None,
                 extra_folders: list[str] | None = None):
        self.length, self.seed = check_count(length, limit=10**12), check_seed(seed)
        self.transform, self.extra_folders = transform, extra_folders
        if isinstance(model, (str, Path)):
            self.model, self._gen = str(model), None
        else:
            self.model, self._gen = None, model
            if not supports_start(model):
                raise InvalidArgumentError("this generator cannot generate by index (no `start` argument)")

    @property
    def generator(self) -> Any:
        if self._gen is None:
            self._gen = load_generator(self.model, self.extra_folders)
        return self._gen

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        index %= self.length
        image = self.generator.generate(count=1, seed=self.seed, start=index, output_type="pt")[0]
        return self.transform(image) if self.transform else image

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        gen = state.pop("_gen")
        if self.model is None:  # a Generator object: ship config + weights, rebuild on the CPU in the worker
            state["_packed"] = (gen.config.to_dict(), gen.reference_net.state_dict(), gen.revision)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        packed = state.pop("_packed", None)
        self.__dict__.update(state, _gen=None)
        if packed is not None:
            from ..config import ModelConfig
            from ..generator import Generator
            config, weights, revision = packed
            self._gen = Generator(ModelConfig.from_dict(config), weights, device="cpu", revision=revision)


class ExportedDataset(Dataset):
    """An exported dataset folder (png / npz / dicom / nifti), in manifest order.

    Item i = float32 [C, H, W] in [-1, 1] (uint8 / 127.5 - 1: the generator's scale, quantised to 8 bits),
    passed through `transform` if given. `rows[i]` holds the manifest row (index, seed, file, item, shard).
    """

    def __init__(self, folder: str | Path, transform: Callable | None = None):
        self.folder, self.transform = Path(folder), transform
        manifest = self.folder / MANIFEST
        if (self.folder / DATASET_JSON).is_file() and \
                json.loads((self.folder / DATASET_JSON).read_text()).get("format") == PARQUET:
            raise MedganError(f"{self.folder.name} is a parquet dataset: read it with ParquetDataset")
        if not manifest.is_file():
            raise MedganError(f"no {MANIFEST} in {self.folder.name}: the export is incomplete or not a medgan "
                              "dataset (re-run the same export command to finish it)")
        self.info = json.loads((self.folder / DATASET_JSON).read_text())
        with open(manifest, newline="") as f:
            self.rows = [{**r, "index": int(r["index"]), "item": int(r["item"])} for r in csv.DictReader(f)]
        self.format = self.info["format"]
        self._cache: tuple[str, np.ndarray] | None = None  # the last npz / nifti file, read whole

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int) -> np.ndarray:
        """Item i as the stored uint8 array [H, W] (or [H, W, C])."""
        row = self.rows[i]
        path = self.folder / row["file"]
        if self.format == "png":
            from PIL import Image
            with Image.open(path) as image:
                return np.asarray(image)
        if self.format == "dicom":
            import pydicom
            return pydicom.dcmread(path).pixel_array
        if self._cache is None or self._cache[0] != row["file"]:
            if self.format == "npz":
                with np.load(path, allow_pickle=False) as f:
                    self._cache = (row["file"], f["images"])
            else:
                import nibabel as nib
                data = np.asarray(nib.load(path).dataobj)
                self._cache = (row["file"], np.moveaxis(np.swapaxes(data, 0, 1), 2, 0))  # -> [n, H, W(, C)]
        return self._cache[1][row["item"]]

    def __getitem__(self, i: int) -> torch.Tensor:
        image = to_float(self.read(i))
        return self.transform(image) if self.transform else image


class ParquetDataset(Dataset):
    """A parquet dataset folder (`--format parquet`), in index order; pyarrow only (no `datasets` needed).

    Item i = {"image": float32 [C, H, W] in [-1, 1] (passed through `transform` if given), "index": its index,
    and "label": its class index when the model is conditional}; the default collate batches these dicts.
    `classes` holds the class names, `labels` every row's class index (empty when unlabelled). Images are read
    by row group (100 rows) and the last CACHED_GROUPS groups kept, so shuffled access stays cheap.
    """

    CACHED_GROUPS = 16

    def __init__(self, folder: str | Path, transform: Callable | None = None):
        import pyarrow.parquet as pq

        self.folder, self.transform = Path(folder), transform
        self.files = shard_files(self.folder)
        schema = pq.read_schema(self.files[0])
        self.classes: list[str] = []
        if "label" in schema.names:
            meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
            self.classes = list(meta.get("info", {}).get("features", {}).get("label", {}).get("names", []))
        self.rows: list[tuple[int, int, int]] = []     # (file number, row group, row in that group)
        index, labels = [], []
        for number, path in enumerate(self.files):
            table = pq.read_table(path, columns=["index", "label"] if self.classes else ["index"])
            index += table.column("index").to_pylist()
            labels += table.column("label").to_pylist() if self.classes else []
            meta = pq.read_metadata(path)
            self.rows += [(number, group, row) for group in range(meta.num_row_groups)
                          for row in range(meta.row_group(group).num_rows)]
        self.index = np.asarray(index, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._groups: OrderedDict[tuple[int, int], Any] = OrderedDict()  # (file, group) -> its image column

    def __len__(self) -> int:
        return len(self.rows)

    def _images(self, number: int, group: int) -> Any:
        import pyarrow.parquet as pq

        key = (number, group)
        if key not in self._groups:
            self._groups[key] = pq.ParquetFile(self.files[number]).read_row_group(group, columns=["image"]).column(0)
            while len(self._groups) > self.CACHED_GROUPS:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return self._groups[key]

    def read(self, i: int) -> np.ndarray:
        """Item i as the stored uint8 array [H, W] (or [H, W, C]), decoded from its PNG bytes."""
        import io

        from PIL import Image

        number, group, row = self.rows[i]
        with Image.open(io.BytesIO(self._images(number, group)[row]["bytes"].as_py())) as image:
            return np.asarray(image)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = to_float(self.read(i))
        item = {"image": self.transform(image) if self.transform else image, "index": int(self.index[i])}
        if self.classes:
            item["label"] = int(self.labels[i])
        return item

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_groups": OrderedDict()}  # each DataLoader worker reads its own row groups
