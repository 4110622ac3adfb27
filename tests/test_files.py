"""medgan.files: atomic writes (files and folders), file digests, bounded caches (and the app's use of them)."""
import hashlib
import os
import time
from pathlib import Path

import pytest

from medgan.files import TEMP_MARK, atomic_path, atomic_write, file_digest, prune_tree


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


def _aged(path, size: int, age_s: float, now: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_prune_tree_bounds_age_then_size_oldest_first(tmp_path):
    now = time.time()
    old = _aged(tmp_path / "a" / "old.png", 100, 7200, now)
    mid = _aged(tmp_path / "b" / "mid.png", 100, 300, now)
    new = _aged(tmp_path / "c" / "new.png", 100, 10, now)
    other = _aged(tmp_path / "keep.txt", 100, 9000, now)
    # age: only the matching file older than an hour goes; its emptied folder too
    assert prune_tree(tmp_path, max_age_s=3600, pattern="*.png", now=now) == 1
    assert not old.exists() and not old.parent.exists() and mid.exists() and other.exists()
    # size: the oldest go first until the matching files total at most 150 bytes
    assert prune_tree(tmp_path, max_bytes=150, pattern="*.png", now=now) == 1
    assert not mid.exists() and new.exists() and other.exists()
    assert prune_tree(tmp_path, max_age_s=3600, max_bytes=150, pattern="*.png", now=now) == 0


def test_exports_and_gradio_cache_are_bounded_by_size(tmp_path, monkeypatch):
    from medgan import service
    monkeypatch.setenv("MEDGAN_EXPORT_DIR", str(tmp_path / "exports"))
    now = time.time()
    for i in range(10):  # 10 exports of 200 kB, one second apart
        _aged(tmp_path / "exports" / f"synthetic_{i}.zip", 200_000, 100 - i, now)
    monkeypatch.setenv("MEDGAN_CACHE_MAX_MB", "1")  # 1 MiB: room for 5
    assert service.cleanup_exports() == 5
    left = sorted(p.name for p in (tmp_path / "exports").iterdir())
    assert left == [f"synthetic_{i}.zip" for i in range(5, 10)]  # the newest stay

    import app
    from gradio.utils import get_upload_folder
    cache = Path(get_upload_folder())
    for i in range(6):  # Gradio's layout: one hashed folder per cached image
        _aged(cache / f"bounded-test-{i:02d}" / "image.png", 300_000, 50 - i, now)
    app.sweep_caches(force=True)
    total = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert total <= 1 << 20 and (cache / "bounded-test-05" / "image.png").exists()
    assert not (cache / "bounded-test-00").exists()


def test_downloads_are_written_inside_gradios_cache_so_it_does_not_copy_them(tmp_path):
    """The app's default export folder lies in Gradio's cache, and Gradio serves such a file where it is (a
    second copy per download otherwise). Checked on Gradio itself, so an upgrade that copies anyway fails."""
    import gradio as gr
    from gradio.utils import get_upload_folder
    inside = Path(get_upload_folder()) / "medgan-exports" / "synthetic_x.zip"
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_bytes(b"zip")
    block = gr.File()
    assert block.move_resource_to_block_cache(str(inside)) == str(inside.resolve())
    outside = tmp_path / "synthetic_y.zip"
    outside.write_bytes(b"zip")
    assert block.move_resource_to_block_cache(str(outside)) != str(outside)  # the copy we avoid
