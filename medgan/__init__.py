"""MedGAN Studio inference package: list, load and sample synthetic medical-image generators.

    import medgan
    medgan.list_models()
    gen = medgan.load_model("brain-t1-dcgan-64")
    images = gen.generate(count=16, seed=42)            # list of PIL images
    arrays = gen.generate(count=16, seed=42, output_type="np")   # uint8 [16, 64, 64]

Imports neither gradio nor training code.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import threads as _threads

if "torch" not in sys.modules:  # OpenMP reads OMP_WAIT_POLICY once, when torch loads (see medgan.threads)
    _threads.choose_wait_policy()

from .config import GeneratorConfig, ModelConfig
from .errors import (ConfigError, GenerationError, InvalidArgumentError, MedganError, SourceUnavailableError,
                     UnknownModelError, WeightsError)
from .generator import Generator
from .registry import Registry, default_sources, get_registry
from .sources import ImageGenerator, ModelInfo

__version__ = "0.1.0"


def list_models(extra_folders: list[str | Path] | None = None) -> list[ModelInfo]:
    """Every available model, from every source (local folders, Hub catalogue, medigan)."""
    if extra_folders:
        return Registry(default_sources(extra_folders)).list_models()
    return get_registry().list_models()


def load_model(model_id: str, extra_folders: list[str | Path] | None = None) -> ImageGenerator:
    """A generator for `model_id`, cached (bounded LRU) in the default registry."""
    if extra_folders:
        return Registry(default_sources(extra_folders)).load(model_id)
    return get_registry().load(model_id)


__all__ = ["list_models", "load_model", "Generator", "GeneratorConfig", "ModelConfig", "ModelInfo",
           "ImageGenerator", "Registry", "get_registry", "MedganError", "UnknownModelError",
           "InvalidArgumentError", "WeightsError", "ConfigError", "SourceUnavailableError", "GenerationError",
           "__version__"]
