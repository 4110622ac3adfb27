"""Small file helpers used across medgan and training: atomic writes, file digests, bounded cache folders.

`atomic_path(path)` yields a temp path beside `path` (same folder, hidden, `.tmp-<pid>-<random>` in its name,
the same suffix so writers that go by the extension still work); when the block succeeds the temp is renamed
onto `path` (one `os.replace`: readers see the old file or the new one, never half of one), when it raises the
temp (file or folder) is removed and the error propagates. `atomic_write(path, data)` is that for bytes or text.
Errors are plain OSErrors: callers that show messages to users translate them (medgan.export.atomic_write).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".tmp-"  # in every temp name: `.<name>.tmp-<pid>-<hex><suffix>`


def temp_path(path: str | Path) -> Path:
    """A fresh hidden temp name beside `path`, keeping its suffix (e.g. `.loss.png.tmp-41-3fa2c1.png`)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:6]}{path.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Write to the yielded temp path (a file, or a folder you create); it becomes `path` on success.

    `overwrite=False` keeps an existing `path` (the temp is discarded): for files several processes may
    write, where the first one wins. Replacing an existing non-empty folder fails; remove it first.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if overwrite or not path.exists():
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (bytes, or str as UTF-8) to `path` atomically; no partial file is left on failure."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB blocks), e.g. sha256 for the Hub catalogue, sha1 for
    the Inception weights."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["atomic_path", "atomic_write", "file_digest", "temp_path", "TEMP_MARK"]


def prune_tree(root: str | Path, *, max_age_s: float | None = None, max_bytes: int | None = None,
               pattern: str = "*", now: float | None = None) -> int:
    """Bound a cache folder: delete files under `root` matching `pattern` (by name) older than `max_age_s`, then
    the oldest until their total size is at most `max_bytes`; folders left empty go too. Files that vanish
    or cannot be removed meanwhile (another sweeper, a reader on Windows) are skipped. Returns files removed."""
    root = Path(root)
    now = time.time() if now is None else now
    files = []
    for path in root.rglob(pattern):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                st = path.stat()
                files.append((st.st_mtime, st.st_size, path))
    files.sort()  # oldest first
    total, emptied = sum(size for _, size, _ in files), set()
    for mtime, size, path in files:
        too_old = max_age_s is not None and now - mtime > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            break  # sorted by age: nothing newer is too old, and the total already fits
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
            emptied.add(path)
    # Only the folders this sweep emptied (not any empty one: a writer may have just made it for a new file).
    for folder in sorted({p.parent for p in emptied if p.parent != root}, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds when empty
    return len(emptied)
