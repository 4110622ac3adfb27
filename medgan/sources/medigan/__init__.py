"""medigan's catalogue of published medical GANs (and our own models packaged for medigan), as a Source.

The "medigan home" (MEDGAN_MEDIGAN_HOME, default <MEDGAN_CACHE_DIR or ~/.cache/medgan>/medigan) is the folder
medigan itself expects as its working directory: `config/global.json` (the catalogue) and `models/<id>/…`
(unpacked model packages). Listing parses global.json here, in this process, and never imports medigan or any
model code. Generation runs `worker.py` (this folder) as a script in a subprocess (cwd = the home), so foreign
code that crashes, hangs, calls os.chdir or sys.exit cannot take this process down; results come back as an
.npz of uint8 arrays read with allow_pickle=False.

Without a global.json (a fresh, offline install) the models of `snapshot.json`, a facts-only snapshot of
medigan's catalogue shipped in this folder, are listed instead; a global.json entry wins over the snapshot's.

Modules: `catalogue` (global.json: read, merge, refresh), `entries` (entry -> ModelInfo), `runner` (the worker
process and its result), `snapshot` (the shipped catalogue snapshot and its builder), `source` (MediganSource,
MediganGenerator), `worker` (the script; never imported).
"""
from __future__ import annotations

from .catalogue import (CONFIG_REL, CONFIG_URL, add_to_catalogue, default_home, is_offline, read_catalogue,
                        refresh_catalogue, valid_catalogue)
from .entries import (IMAGE_TO_IMAGE, MASK_CONDITIONED, OUR_TAG, PREFIX, classify, entry_revision, image_shape,
                      info_from_entry, modality_code, package_present, published_metrics)
from .runner import WORKER, preflight, run_worker
from .snapshot import SNAPSHOT, load_snapshot
from .source import MediganGenerator, MediganSource

__all__ = ["MediganSource", "MediganGenerator", "add_to_catalogue", "read_catalogue", "refresh_catalogue",
           "classify", "info_from_entry", "default_home", "run_worker", "is_offline", "IMAGE_TO_IMAGE",
           "MASK_CONDITIONED", "CONFIG_URL", "CONFIG_REL", "OUR_TAG", "PREFIX", "WORKER", "entry_revision",
           "image_shape", "modality_code", "package_present", "published_metrics", "valid_catalogue", "SNAPSHOT",
           "load_snapshot", "preflight"]
