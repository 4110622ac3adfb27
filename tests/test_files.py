"""medgan.files: atomic writes (files and folders) and file digests."""
import hashlib

import pytest

from medgan.files import TEMP_MARK, atomic_path, atomic_write, file_digest


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    atomic_write(path, "old")
    assert atomic_write(path, b"new") == path and path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_path_keeps_the_suffix_and_cleans_up_on_failure(tmp_path):
    path = tmp_path / "loss.png"
    path.write_bytes(b"before")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".loss.png" + TEMP_MARK) and tmp.suffix == ".png"
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"before" and [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_atomic_path_folders_and_first_writer_wins(tmp_path):
    with atomic_path(tmp_path / "shard") as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    assert (tmp_path / "shard" / "x").read_text() == "1"
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "broken") as tmp:
            tmp.mkdir()
            (tmp / "y").write_text("2")
            raise OSError("disk full")
    with atomic_path(tmp_path / "shard" / "x", overwrite=False) as tmp:
        tmp.write_text("second")
    assert (tmp_path / "shard" / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["shard", "x"]


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "sha1") == hashlib.sha1(data).hexdigest()
