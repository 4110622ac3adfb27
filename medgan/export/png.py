"""PNG export: one 8-bit PNG per image, with tEXt chunks that say it is synthetic and where it came from."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from .base import ExportFile, Provenance, file_stem, labelled


def png_bytes(image: Image.Image | np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG with tEXt chunks. compress_level 1: 64² grayscale PNGs are tiny; speed matters more."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def png_files(arrays: np.ndarray, prov: Provenance, start: int, label: bool = False,
              **_: Any) -> list[ExportFile]:
    """`synthetic_<model>_seed<s>_<index>.png` per image; text chunks from `Provenance.for_index`."""
    return [ExportFile(file_stem(prov.model_id, prov.seed, start + i) + ".png",
                       png_bytes(a, prov.for_index(start + i)), (start + i,))
            for i, a in enumerate(labelled(arrays, label))]
