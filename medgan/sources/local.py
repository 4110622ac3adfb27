"""Local model folders: `weights/` plus extra folders (argument or MEDGAN_WEIGHTS_DIRS)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import ModelConfig
from ..errors import MedganError, UnknownModelError
from ..generator import WEIGHTS_FILE, Generator
from . import ModelInfo, card_summary

log = logging.getLogger(__name__)


class LocalSource:
    name = "local"

    def __init__(self, folders: list[str | Path]):
        self.folders = [Path(f) for f in folders]
        self.problems: dict[str, str] = {}   # folder name -> why it is not listed

    def _scan(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        self.problems = {}
        for root in self.folders:
            if not root.is_dir():
                continue
            for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()):
                try:
                    config = ModelConfig.load(folder)
                except MedganError as exc:
                    self.problems[folder.name] = str(exc)
                    log.warning("skipping model folder %s: %s", folder.name, exc)
                    continue
                found.setdefault(config.id, folder)  # earlier folders win, like PATH
        return found

    def list_models(self) -> list[ModelInfo]:
        infos = []
        for model_id, folder in self._scan().items():
            try:
                config = ModelConfig.load(folder)
            except MedganError:
                continue  # changed between scan and read
            infos.append(ModelInfo.from_config(config, self.name, card_summary(folder / "README.md")))
        return infos

    def folder(self, model_id: str) -> Path:
        folders = self._scan()
        if model_id not in folders:
            raise UnknownModelError(model_id, sorted(folders))
        return folders[model_id]

    def load(self, model_id: str) -> Generator:
        return Generator.from_folder(self.folder(model_id), source=self.name)

    def fingerprint(self, model_id: str) -> str:
        folder = self.folder(model_id)
        parts = []
        for name in (WEIGHTS_FILE, "config.json"):
            try:
                st = (folder / name).stat()
                parts.append(f"{st.st_mtime_ns}:{st.st_size}")
            except OSError:
                parts.append("missing")
        return "|".join(parts)
