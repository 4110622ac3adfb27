"""Two torch Datasets: images generated on the fly (SyntheticDataset) and an exported folder (ExportedDataset).

Both return float32 tensors [C, H, W] in [-1, 1] (the generator's scale) and work with
`DataLoader(num_workers>0)`.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InvalidArgumentError, MedganError
from ..validation import check_count, check_seed
from .shards import DATASET_JSON, MANIFEST, load_generator, supports_start


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
