"""Pseudonyms for user data: subjects and file ids become keyed hashes at ingestion; the key stays local.

A dataset built from a person's files (`python -m training.data INPUT… --out DATA.npz`) never stores a DICOM
PatientID, a BIDS subject or a file path: each subject becomes `subj-<HMAC-SHA256(key, value), 8 hex>` and each
file id `file-<12 hex><extension>` (only the extension is kept). Training copies the dataset's sources into
config.json and the model card, so only pseudonyms ever reach what is published.

The key and the pseudonym -> original mapping live in `DATA.keys.json` beside the dataset (`keys_path`), never in
the .npz meta. One key per output folder: a new keys file reuses the key of `DATA.keys.json` if it exists, else
of any other `*.keys.json` in the same folder, so re-ingesting (or a second dataset from the same patients) gives
the same pseudonyms. The file also lists identifiers the files carried (DICOM PatientName, PatientBirthDate) so
`training.push` can check that none of them reached a model folder. Keep it private: it re-identifies the data.
While a dataset folder is being ingested, names given since the file was last written whole go to a journal
beside it (`DATA.keys.journal.jsonl`, as private), folded into the file when ingestion ends.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from medgan.files import atomic_write

KEYS_SUFFIX = ".keys.json"
JOURNAL_SUFFIX = ".keys.journal.jsonl"  # names given since the keys file was last written whole (Keys.save_new)
FORMAT = "medgan-pseudonym-keys"
SUBJECT_PREFIX, FILE_PREFIX = "subj-", "file-"
SUBJECT_HEX, FILE_HEX = 8, 12
PSEUDONYM = re.compile(r"^(?:subj-[0-9a-f]{8,64}|file-[0-9a-f]{12,64}(?:\.[a-z][a-z0-9]{0,4}){0,2})$")
# Extensions kept on file pseudonyms: the readers' own (two-part ones first), else one short alphabetic suffix.
KNOWN_EXTENSIONS = (".nii.gz", ".nii", ".mgz", ".mgh", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm",
                    ".dicom", ".ima", ".inv3")
WARNING = ("PRIVATE. This file re-identifies the pseudonymised dataset beside it (the key and the original "
           "subject ids, file paths and patient identifiers). Keep it with the data; never publish or share it.")


class KeysError(ValueError):
    """An unreadable or foreign keys file; the message names it."""


def keys_path(dataset: str | Path) -> Path:
    """`data/mine.npz` -> `data/mine.keys.json`."""
    dataset = Path(dataset)
    return dataset.with_name(dataset.name.removesuffix(".npz") + KEYS_SUFFIX)


def journal_path(keys_file: Path) -> Path:
    """`data/mine.keys.json` -> `data/mine.keys.journal.jsonl`."""
    return keys_file.with_name(keys_file.name.removesuffix(KEYS_SUFFIX) + JOURNAL_SUFFIX)


def _replay(journal: Path, tables: dict[str, dict]) -> None:
    """Names a journal adds to the tables read from its keys file. A last line cut off by a kill is ignored: it was
    being written before the shard that would use its names, so none of them is on disk."""
    if not journal.is_file():
        return
    lines = journal.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        try:
            entries = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise KeysError(f"{journal} is damaged at line {i + 1}") from None
        for kind, name, value in entries:
            if kind == "identifiers":
                tables[kind].setdefault(name, {}).update(value)
            else:
                tables[kind][name] = value


def keyed_hash(key: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of `kind` NUL `value` under `key`, hex (kinds keep subject and file pseudonyms apart)."""
    return hmac.new(key, f"{kind}\0{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def is_pseudonym(value: str) -> bool:
    return bool(PSEUDONYM.match(str(value)))


def extension(file_id: str) -> str:
    """The extension worth keeping: the readers' known ones, else one short alphabetic suffix, else ''."""
    name = str(file_id).split("#", 1)[0].replace("\\", "/").rsplit("/", 1)[-1].lower()
    for ext in KNOWN_EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    m = re.search(r"(\.[a-z][a-z0-9]{0,4})$", name)
    return m.group(1) if m and len(name) > len(m.group(1)) else ""


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeysError(f"cannot read the pseudonym keys file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("key"), str):
        raise KeysError(f"{path} is not a MedGAN pseudonym keys file (format {FORMAT!r} with a key)")
    try:
        bytes.fromhex(data["key"])
    except ValueError:
        raise KeysError(f"{path}: the key is not hex") from None
    return data


@dataclass
class Keys:
    """A key and its pseudonym -> original mappings (subjects, files, identifiers per subject pseudonym)."""
    path: Path
    key: bytes
    subjects: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:  # original -> pseudonym, so re-ingestion reuses names in O(1)
        self._given = {kind: {o: p for p, o in table.items()}
                       for kind, table in (("subject", self.subjects), ("file", self.files))}
        self._new: list[list] = []  # [table, name, value] given since the last save, for save_new

    @classmethod
    def open(cls, path: str | Path, key_from: str | Path | None = None) -> "Keys":
        """The keys at `path` if the file exists; else a new mapping with the key of `key_from`, else of another
        keys file in the same folder, else a fresh random one (written by `save`)."""
        path = Path(path)
        if path.is_file():
            data = _read(path)
            tables = {kind: dict(data.get(kind) or {}) for kind in ("subjects", "files", "identifiers")}
            _replay(journal_path(path), tables)
            return cls(path, bytes.fromhex(data["key"]), tables["subjects"], tables["files"], tables["identifiers"])
        donors = [Path(key_from)] if key_from else sorted(path.parent.glob(f"*{KEYS_SUFFIX}"))
        for donor in donors:
            if key_from or donor.is_file():
                return cls(path, bytes.fromhex(_read(donor)["key"]))
        return cls(path, secrets.token_bytes(32))

    def _name(self, table: dict[str, str], prefix: str, kind: str, digits: int, value: str, ext: str = "") -> str:
        given = self._given[kind]
        if value in given:  # re-ingestion: the name already given
            return given[value]
        digest = keyed_hash(self.key, kind, value)
        while digits <= len(digest):
            name = f"{prefix}{digest[:digits]}{ext}"
            if table.setdefault(name, value) == value:
                given[value] = name
                self._new.append([f"{kind}s", name, value])
                return name
            digits += 4  # a collision of the truncated hash: a longer one for this value
        raise KeysError(f"pseudonym collision for a {kind} in {self.path}")

    def subject(self, original: str) -> str:
        return self._name(self.subjects, SUBJECT_PREFIX, "subject", SUBJECT_HEX, str(original))

    def file(self, original: str) -> str:
        return self._name(self.files, FILE_PREFIX, "file", FILE_HEX, str(original), extension(original))

    def note_identifiers(self, subject_pseudonym: str, values: dict[str, str]) -> None:
        kept = {k: str(v) for k, v in values.items() if str(v or "").strip()}
        if kept:
            self.identifiers.setdefault(subject_pseudonym, {}).update(kept)
            self._new.append(["identifiers", subject_pseudonym, kept])

    def originals(self) -> dict[str, str]:
        """Every original value -> where it came from ("subject", "file id", "PatientName", …), for scans."""
        out = {v: "subject id" for v in self.subjects.values()}
        out.update({v: "file path" for v in self.files.values()})
        for values in self.identifiers.values():
            out.update({v: k for k, v in values.items()})
        return out

    def save(self) -> Path:
        """The whole keys file (private: mode 0600); a journal beside it is folded in and removed."""
        data = {"format": FORMAT, "version": 1, "warning": WARNING,
                "algorithm": f"HMAC-SHA256(key, kind NUL value), hex truncated: {SUBJECT_PREFIX}{SUBJECT_HEX} "
                             f"digits, {FILE_PREFIX}{FILE_HEX} digits + extension",
                "key": self.key.hex(), "subjects": dict(sorted(self.subjects.items())),
                "files": dict(sorted(self.files.items())), "identifiers": dict(sorted(self.identifiers.items()))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        _private(self.path)
        journal_path(self.path).unlink(missing_ok=True)
        self._new = []
        return self.path

    def save_new(self) -> Path:
        """The names given since the last save, appended to the journal beside the keys file (`save` writes the
        whole file the first time). Ingestion saves before every shard it writes, so no pseudonym is on disk
        before its mapping; rewriting the whole file each time grew with files x shards (150,000 files in
        shards of 1,024: about 150 rewrites of 150,000 names), appending grows with the new names alone."""
        if not self.path.is_file():
            return self.save()
        if self._new:
            journal = journal_path(self.path)
            with open(journal, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self._new, ensure_ascii=False, separators=(",", ":")) + "\n")
            _private(journal)
            self._new = []
        return self.path


def _private(path: Path) -> None:
    try:
        path.chmod(0o600)
    except OSError:
        pass


# --- how a dataset is named in what may be published ------------------------------------------------------

def recorded_name(name: str, public: bool, sha256: str) -> str:
    """The dataset's name in config.json, the weights' metadata, the card, eval.json and downstream.json, in
    place of the path it was read from (file and folder names can name a patient): a public dataset's own
    name, any other `dataset-` + the first 12 hex digits of the sha256 of its training pixels (the model's
    training_data.sha256)."""
    return str(name) if public and name else f"dataset-{str(sha256)[:12]}"


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with what it gives `option` (`--data X` or `--data=X`) replaced by `value`."""
    out, replace = [], False
    for arg in argv:
        if replace:
            arg, replace = value, False
        elif arg == option:
            replace = True
        elif arg.startswith(option + "="):
            arg = f"{option}={value}"
        out.append(arg)
    return out


def recorded_command(command: str, option: str, value: str) -> str:
    """A recorded shell command with what it gives `option` replaced by `value`."""
    try:
        return shlex.join(with_option(shlex.split(command), option, value))
    except ValueError:  # unbalanced quotes: not a command this project wrote
        return command


__all__ = ["Keys", "KeysError", "KEYS_SUFFIX", "extension", "is_pseudonym", "keyed_hash", "keys_path",
           "recorded_command", "recorded_name", "with_option"]
