"""Hugging Face Hub models, pinned by revision and verified by sha256, listed from a catalogue file.

Catalogue (JSON): {"models": [{"id": "...", "repo_id": "ORG/NAME", "revision": "<commit sha>",
"sha256": {"model.safetensors": "<hex>", ...}}]} — `python -m training.push … --catalogue` writes entries.
Weights without a sha256 in the entry are refused; other files are checked when theirs is given. Listing
reads only the local cache; loading calls `hf_hub_download`, which under HF_HUB_OFFLINE=1 serves from the
cache or fails clearly (online, e.g. on a Space, it downloads at the pinned revision).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ModelConfig
from ..errors import ConfigError, MedganError, SourceUnavailableError, UnknownModelError, WeightsError
from ..files import file_digest
from ..generator import WEIGHTS_FILE, Generator, load_weights
from . import ModelInfo, card_summary

REPO_FILES = ("config.json", WEIGHTS_FILE, "README.md")


@dataclass(frozen=True)
class HubEntry:
    id: str
    repo_id: str
    revision: str = "main"
    sha256: dict[str, str] = field(default_factory=dict)


def read_catalogue(path: Path) -> list[HubEntry]:
    try:
        data = json.loads(path.read_text())
        return [HubEntry(id=m["id"], repo_id=m["repo_id"], revision=m.get("revision", "main"),
                         sha256=dict(m.get("sha256", {}))) for m in data.get("models", [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"Hub catalogue is invalid: {type(exc).__name__}: {exc}") from None


def sha256_file(path: str | Path) -> str:
    """The sha256 the catalogue records for a file (tests and tools import it from here)."""
    return file_digest(path, "sha256")


class HubSource:
    name = "hub"

    def __init__(self, catalogues: list[str | Path], cache_dir: str | Path | None = None):
        self.catalogues = [Path(c) for c in catalogues]
        self.cache_dir = str(cache_dir) if cache_dir else None

    def entries(self) -> dict[str, HubEntry]:
        out: dict[str, HubEntry] = {}
        for cat in self.catalogues:
            for entry in read_catalogue(cat):
                out.setdefault(entry.id, entry)
        return out

    def entry(self, model_id: str) -> HubEntry:
        entries = self.entries()
        if model_id not in entries:
            raise UnknownModelError(model_id, sorted(entries))
        return entries[model_id]

    def _download(self, entry: HubEntry, filename: str, local_only: bool) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(entry.repo_id, filename, revision=entry.revision,
                                        cache_dir=self.cache_dir, local_files_only=local_only))
        except LocalEntryNotFoundError:
            raise SourceUnavailableError(
                f"model {entry.id!r}: {filename} of {entry.repo_id}@{entry.revision[:12]} is not in the local "
                "Hugging Face cache and the Hub cannot be reached (offline?)") from None
        except Exception as exc:  # network, 404, auth: all mean "not available now"
            raise SourceUnavailableError(
                f"model {entry.id!r}: could not fetch {filename} from {entry.repo_id}@{entry.revision[:12]} "
                f"({type(exc).__name__})") from None

    def _cached_or_download(self, entry: HubEntry, filename: str) -> Path:
        """The cache first: a pinned revision never changes, and a cache hit must not wait on Hub retries."""
        try:
            return self._download(entry, filename, local_only=True)
        except SourceUnavailableError:
            return self._download(entry, filename, local_only=False)

    def _verified(self, entry: HubEntry, filename: str) -> Path:
        path = self._cached_or_download(entry, filename)
        want = entry.sha256.get(filename)
        if not want and filename == WEIGHTS_FILE:  # weights are code-adjacent: never load them unverified
            raise WeightsError(f"model {entry.id!r}: the Hub catalogue gives no sha256 for {filename} of "
                               f"{entry.repo_id}; refusing unverified weights (python -m training.push … "
                               "--catalogue writes a complete entry)")
        if want and sha256_file(path) != want.lower():
            raise WeightsError(f"model {entry.id!r}: {filename} from {entry.repo_id}@{entry.revision[:12]} "
                               "fails its sha256 check (tampered or corrupt); refusing to load it")
        return path

    def list_models(self) -> list[ModelInfo]:
        infos = []
        for entry in self.entries().values():
            try:
                folder = self._download(entry, "config.json", local_only=True).parent
                config = ModelConfig.load(folder)
                infos.append(ModelInfo.from_config(config, self.name, card_summary(folder / "README.md"),
                                                   revision=entry.revision, model_id=entry.id))
            except MedganError:
                infos.append(ModelInfo(id=entry.id, title=entry.id, source=self.name, revision=entry.revision,
                                       notice=f"{entry.repo_id} is not downloaded yet"))
        return infos

    def load(self, model_id: str) -> Generator:
        entry = self.entry(model_id)
        paths = {}
        for filename in (*REPO_FILES,):
            try:
                paths[filename] = self._verified(entry, filename)
            except SourceUnavailableError:
                if filename == "README.md":
                    continue  # the card is optional for generation
                raise
        folder = paths["config.json"].parent
        config = dataclasses.replace(ModelConfig.load(folder), id=model_id)
        return Generator(config, load_weights(paths[WEIGHTS_FILE].parent, model_id),
                         revision=entry.revision, source=self.name)

    def fingerprint(self, model_id: str) -> str:
        entry = self.entry(model_id)
        return f"{entry.repo_id}@{entry.revision}"
