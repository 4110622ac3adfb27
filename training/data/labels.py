"""The label kinds a slice can carry (a conditional generator's classes, a downstream task): one definition."""
from __future__ import annotations

import numpy as np

LEVEL_BANDS = 5
# Level k of 5: band k of the slice's position within its volume's extent along the slicing axis (the extent
# of the kept, non-empty slices, i.e. roughly the head or brain). Named by the axis (RAS+).
LEVEL_NAMES = {2: ["inferior", "lower", "middle", "upper", "superior"],
               1: ["posterior", "rear", "central", "front", "anterior"],
               0: ["left", "left-mid", "midline", "right-mid", "right"]}
PLANES = {0: "sagittal", 1: "coronal", 2: "axial", -1: "native"}
LABEL_KINDS = ("level", "plane", "contrast")
LABEL_DOCS = {"level": f"{LEVEL_BANDS} bands of each volume's extent along its slicing axis", "plane": "slicing axis",
              "contrast": "MR contrast named per source file"}


def level_bands(source: np.ndarray, axis: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Band 0..LEVEL_BANDS-1 of each slice's position within the extent of its volume's kept slices along
    its axis (before the split drops gap slices); -1 for native 2-D images, which have no position."""
    level = np.full(len(pos), -1, np.int8)
    for key in set(zip(source.tolist(), axis.tolist())):
        if key[1] < 0:
            continue
        m = np.flatnonzero((source == key[0]) & (axis == key[1]))
        lo, hi = pos[m].min(), pos[m].max()
        frac = (pos[m] - lo) / (hi - lo) if hi > lo else np.full(len(m), 0.5)
        level[m] = np.minimum((frac * LEVEL_BANDS).astype(int), LEVEL_BANDS - 1)
    return level
