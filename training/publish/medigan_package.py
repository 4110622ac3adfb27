"""A MedGAN Studio generator packaged for medigan (https://github.com/RichardObi/medigan).

Synthetic images only: for research, education and augmentation, NOT for diagnosis.

    generate(model_file, num_samples, output_path, save_images, seed=0, start=0, device="cpu",
             truncation=1.0, label=None)

This file is the package's `__init__.py` (training.publish.export_medigan copies it into the zip). Beside it, in
`_medgan/`, the package carries a copy of MedGAN Studio's own inference modules (network definitions, the
fast CPU layouts, fixed tiles, latent scheme), so it computes exactly what MedGAN Studio computes: on the same
device and torch build, the pixels equal MedGAN Studio's for the same (seed, index, truncation, label).
Needs numpy, torch, safetensors and Pillow, not medgan. Weights are `model.safetensors` (no pickle).
"""
import json
import os
import re

try:  # inside the exported package: the vendored copy
    from ._medgan.config import ModelConfig
    from ._medgan.generator import Generator
except ImportError:  # imported from the MedGAN Studio repository (tests): the same modules, installed
    from medgan.config import ModelConfig
    from medgan.generator import Generator

_next_index = {}  # save_images=True: medigan calls us once per batch_<n> folder; indices continue across them
_loaded = {}


def load(model_file, device="cpu"):
    """The Generator for `model_file` (config from the safetensors metadata, else config.json beside it)."""
    key = (os.path.abspath(str(model_file)), str(device))
    if key not in _loaded:
        from safetensors import safe_open

        with safe_open(str(model_file), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        if "medgan_config" in meta:
            config = json.loads(meta["medgan_config"])
        else:
            with open(os.path.join(os.path.dirname(str(model_file)), "config.json")) as f:
                config = json.load(f)
        _loaded[key] = Generator(ModelConfig.from_dict(config), state, device=device)
    return _loaded[key]


def sample(model_file, num_samples, seed=0, start=0, device="cpu", truncation=1.0, label=None):
    """uint8 array [n, H, W] (grayscale) or [n, H, W, 3]: images start..start+n-1 of `seed`."""
    import numpy as np

    if int(num_samples) <= 0:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return load(model_file, device).generate(int(num_samples), int(seed), start=int(start), truncation=truncation,
                                             label=label, output_type="np")


def generate(model_file, num_samples, output_path, save_images, seed=0, start=0, device="cpu", truncation=1.0,
             label=None, **kwargs):
    """medigan's entry point: a list of uint8 arrays, or (save_images) PNG files in output_path."""
    seed, start, num_samples = int(seed), int(start), int(num_samples)
    if not save_images:
        return list(sample(model_file, num_samples, seed, start, device, truncation, label))
    # medigan saves in batches (output_path = …/batch_<n>/) without telling us the batch offset.
    parent, folder = os.path.split(os.path.normpath(str(output_path)))
    batch = re.fullmatch(r"batch_(\d+)", folder)
    key = (os.path.abspath(parent), str(model_file), seed)
    first = start if not batch or batch.group(1) == "0" else _next_index.get(key, start)
    _next_index[key] = first + num_samples
    if num_samples <= 0:
        return None
    from PIL import Image

    os.makedirs(str(output_path), exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(__name__).rsplit(".", 1)[-1])
    for offset, array in enumerate(sample(model_file, num_samples, seed, first, device, truncation, label)):
        Image.fromarray(array).save(os.path.join(str(output_path),
                                                 f"synthetic_{name}_seed{seed}_{first + offset:05d}.png"))
    return None
