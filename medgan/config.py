"""The model config: architecture + metadata, saved as config.json beside the weights.

One dataclass describes a model fully, so a folder (or a Hub repo, or a training checkpoint) carries
everything needed to rebuild and to describe its generator.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import atomic_write

FORMAT_VERSION = 1
_JSON_TYPES = {"str": str, "int": int, "dict[str, Any]": dict}  # annotation -> JSON type of config fields
_JSON_NAMES = {str: "string", int: "integer", dict: "object"}
RESOLUTIONS = (32, 64, 128, 256)
# A DICOM modality code (ModelConfig.modality) as people name it, for cards and their tags.
MODALITY_NAMES = {"MR": "MRI", "CT": "CT", "CR": "X-ray", "DX": "X-ray", "MG": "mammography", "US": "ultrasound",
                  "PT": "PET", "OT": ""}


def modality_name(modality: str) -> str:
    """"MRI" for "MR", …; an unknown code as it is, "" for none."""
    return MODALITY_NAMES.get(modality.upper(), modality) if modality else ""


def slug(text: str) -> str:
    """A Hub tag or id: lower case, runs of anything but a-z and 0-9 as one "-"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


ARCHS = ("dcgan", "style")
# The width cap of the style generators that training builds (`python -m training.train --arch style`):
# GeneratorConfig.max_width (512) is what the format allows, 256 what the shipped style models use.
STYLE_TRAINING_MAX_WIDTH = 256


@dataclass
class GeneratorConfig:
    """The generator's architecture. `arch` picks the network (absent in older config.json files: "dcgan"):

    - "dcgan": latent -> ConvT 4x4 -> (ConvT stride 2 + BN + ReLU)* -> ConvT -> Tanh (medgan.nets);
    - "style": mapping network (z ++ class embedding -> w) + modulated synthesis layers (medgan.stylenet).
    Fields after `max_width` apply to "style" only.
    """

    arch: str = "dcgan"
    latent_dim: int = 100
    resolution: int = 64
    channels: int = 1
    base_width: int = 64
    # Channels of each up-sampling block, from the 4x4 block upward; empty means derived from base_width
    # the classic way (base_width * 8, 4, 2, 1 at 64²), capped at max_width.
    widths: list[int] = field(default_factory=list)
    max_width: int = 512
    # Style only, the width schedule of StyleGAN2: > 0 gives each resolution R min(channel_base // R, max_width)
    # channels (0: the base_width rule above).
    channel_base: int = 0
    w_dim: int = 256
    mapping_layers: int = 2
    noise: bool = True
    # Style only: the doublings to this resolution and above are detail blocks (bilinear up-sampling + two
    # modulated 3x3 convs, medgan.stylenet.DetailBlock) instead of one 4x4 transposed conv. 0 = none, as in
    # every model folder written before the field existed, so those load and draw as before.
    detail_from: int = 0
    # Class names of a conditional model (label i = classes[i]); [] = unconditional. `condition` names the
    # label kind the classes come from (level, plane, contrast, …).
    classes: list[str] = field(default_factory=list)
    condition: str = ""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"generator.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "dcgan" and self.classes:
            raise ConfigError("generator.classes: DCGAN models are unconditional")
        if not isinstance(self.classes, list) or not all(isinstance(c, str) and c for c in self.classes) \
                or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"generator.classes must be a list of distinct non-empty strings, got {self.classes!r}")
        if not isinstance(self.noise, bool) or not isinstance(self.condition, str):
            raise ConfigError("generator.noise must be a boolean and generator.condition a string")
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution!r}")
        for name in ("latent_dim", "channels", "base_width", "max_width", "w_dim", "mapping_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"generator.{name} must be a positive integer, got {value!r}")
        if any(not isinstance(v, int) or isinstance(v, bool) for v in (self.channel_base, self.detail_from)) \
                or self.channel_base < 0 or self.detail_from < 0 or (self.detail_from and (
                self.detail_from < 8 or self.detail_from & (self.detail_from - 1))):
            raise ConfigError(f"generator.channel_base must be >= 0 and generator.detail_from 0 or a power of two "
                              f">= 8, got {self.channel_base!r} and {self.detail_from!r}")
        if self.arch == "dcgan" and (self.channel_base or self.detail_from):
            raise ConfigError("generator.channel_base and generator.detail_from apply to style models only")
        self.widths = list(self.widths) or self.default_widths()
        if len(self.widths) != self.num_blocks or any(not isinstance(w, int) or w < 1 for w in self.widths):
            raise ConfigError(
                f"generator.widths must list {self.num_blocks} positive integers for resolution "
                f"{self.resolution}, got {self.widths!r}")

    @property
    def num_blocks(self) -> int:
        """DCGAN: blocks before the output layer (4x4, then one per doubling up to resolution/2).
        Style: synthesis layers (4x4, then one per doubling up to the resolution)."""
        return int(math.log2(self.resolution)) - (1 if self.arch == "style" else 2)

    def default_widths(self) -> list[int]:
        n = self.num_blocks
        if self.channel_base:
            return [min(self.channel_base // (4 * 2 ** i), self.max_width) for i in range(n)]
        return [min(self.base_width * 2 ** (n - 1 - i), self.max_width) for i in range(n)]

    @property
    def plain_layers(self) -> int:
        """Style: synthesis layers before the first detail block (4x4 and the transposed-conv doublings)."""
        if not self.detail_from or self.detail_from > self.resolution:
            return self.num_blocks
        return max(1, int(math.log2(self.detail_from)) - 2)

    @property
    def conditional(self) -> bool:
        return bool(self.classes)


@dataclass
class ModelConfig:
    """Everything config.json holds. Unknown keys are kept in `extra` so newer files still load."""

    id: str
    title: str = ""
    modality: str = ""          # DICOM modality code where one applies: MR, CT, CR, MG, …
    organ: str = ""             # organ / body region
    plane: str = ""             # axial, coronal, sagittal, mixed
    description: str = ""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    # Data the model was trained on: name, source, license, subjects, slices, url.
    training_data: dict[str, Any] = field(default_factory=dict)
    license: str = "mit"
    intended_use: str = ("Research, education, data augmentation and benchmarking. "
                         "Not for diagnosis or any clinical decision.")
    # Measured metrics (FID, KID, precision, recall, …), written by `python -m training.evaluate`.
    metrics: dict[str, Any] = field(default_factory=dict)
    # How it was trained: recipe, command, steps, wall time, hardware.
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        return {**data, **extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        if "id" not in kwargs:
            raise ConfigError("config has no 'id'")
        for f in dataclasses.fields(cls):  # config.json is untrusted: wrong types would fail far from here
            want = _JSON_TYPES.get(str(f.type))
            value = kwargs.get(f.name)
            if want and f.name in kwargs and (not isinstance(value, want) or isinstance(value, bool)):
                raise ConfigError(f"config {f.name!r} must be a JSON {_JSON_NAMES[want]}, got {type(value).__name__}")
        if not kwargs["id"].strip():
            raise ConfigError("config 'id' is empty")
        gen = kwargs.get("generator", {})
        if not isinstance(gen, dict):
            raise ConfigError("config 'generator' must be an object")
        gen_fields = {f.name for f in dataclasses.fields(GeneratorConfig)}
        unknown = set(gen) - gen_fields
        if unknown:
            raise ConfigError(f"config 'generator' has unknown keys {sorted(unknown)}")
        try:
            kwargs["generator"] = GeneratorConfig(**gen)
        except TypeError as exc:
            raise ConfigError(f"config 'generator' is invalid: {exc}") from None
        return cls(**kwargs, extra=extra)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, self.to_json())

    @classmethod
    def load(cls, folder: str | Path) -> "ModelConfig":
        path = Path(folder) / "config.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("config.json is missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config.json is unreadable: {type(exc).__name__}: {exc}") from None
        return cls.from_dict(data)
