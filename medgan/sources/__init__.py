"""Model sources: small plug-ins behind one interface (`Source`).

A source lists what it can provide as `ModelInfo` (cheap, never touches the network) and loads one
model by id into something with `generate(count, seed, output_type=...)`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..config import ModelConfig

# Kinds of model. Only noise-to-image models can be sampled from a seed alone.
NOISE_TO_IMAGE = "noise-to-image"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    title: str
    source: str                          # "local", "hub", "medigan"
    modality: str = ""
    organ: str = ""
    plane: str = ""
    resolution: int | None = None
    channels: int = 1
    architecture: str = "DCGAN"
    dataset: str = ""
    license: str = ""
    kind: str = NOISE_TO_IMAGE
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    card_summary: str = ""
    revision: str = ""
    notice: str = ""                     # e.g. "not in the local cache", "image-to-image: not offered"
    classes: tuple[str, ...] = ()        # class names of a conditional model
    arch: str = ""                       # generator.arch of MedGAN Studio models ("dcgan", "style")

    @property
    def generatable(self) -> bool:
        return self.kind == NOISE_TO_IMAGE

    def label(self) -> str:
        size = f"{self.resolution}²" if self.resolution else "?"
        parts = [p for p in (self.modality, self.organ, size) if p]
        return f"{self.title or self.id} · {' · '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "generatable": self.generatable}

    @classmethod
    def from_config(cls, config: ModelConfig, source: str, card_summary: str = "", revision: str = "",
                    notice: str = "", model_id: str | None = None) -> "ModelInfo":
        data = config.training_data
        return cls(id=model_id or config.id, title=config.title or config.id, source=source,
                   modality=config.modality, organ=config.organ, plane=config.plane,
                   resolution=config.generator.resolution, channels=config.generator.channels,
                   architecture=config.extra.get("architecture", "DCGAN"),
                   dataset=str(data.get("name", "")), license=config.license, metrics=dict(config.metrics),
                   description=config.description, card_summary=card_summary, revision=revision, notice=notice,
                   classes=tuple(config.generator.classes), arch=config.generator.arch)


@runtime_checkable
class ImageGenerator(Protocol):
    def generate(self, count: int = 16, seed: int = 0, *, output_type: str = "pil") -> Any: ...


class Source(Protocol):
    name: str

    def list_models(self) -> list[ModelInfo]: ...

    def load(self, model_id: str) -> ImageGenerator: ...

    def fingerprint(self, model_id: str) -> str:
        """Changes when the model's files change, so a cached copy is dropped."""
        ...


def card_summary(readme: Path, limit: int = 600) -> str:
    """First prose paragraph of a model card (after the YAML front matter and headings)."""
    try:
        text = readme.read_text(errors="replace")
    except OSError:
        return ""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if para and not para.startswith(("#", "!", "|", "<", "```", ">")):
            return para[:limit]
    return ""
