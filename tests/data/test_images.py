"""The content-addressed image store."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from data.disk import DiskFull
from data.images import PNG_SIGNATURE, TEMP_PREFIX, ImageStore

PNG = PNG_SIGNATURE + b"pretend image data"
OTHER_PNG = PNG_SIGNATURE + b"another image"


def test_put_names_the_file_by_its_sha256(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    stored = store.put(PNG)
    sha = hashlib.sha256(PNG).hexdigest()
    assert stored.sha256 == sha
    assert stored.path == f"{sha[:2]}/{sha[2:4]}/{sha}.png"
    assert stored.size_bytes == len(PNG)
    assert store.path_of(stored.path).read_bytes() == PNG
    assert store.path_of(stored.path) == tmp_path / sha[:2] / sha[2:4] / f"{sha}.png"


def test_put_twice_keeps_one_file_and_leaves_no_temp(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    assert store.put(PNG) == store.put(PNG)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1
    assert not files[0].name.startswith(TEMP_PREFIX)
    assert files[0].stat().st_mode & 0o777 == 0o644


def test_put_refuses_bytes_that_are_not_png(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PNG"):
        ImageStore(tmp_path).put(b"GIF89a")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_write_on_a_full_disk_is_told_so_and_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def disk_full(_fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("data.images.os.fsync", disk_full)
    with pytest.raises(DiskFull, match=f"^the disk is full: free space on {tmp_path}$"):
        ImageStore(tmp_path).put(PNG)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "ab/../../x.png", ""])
def test_path_of_refuses_paths_outside_the_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a path inside"):
        ImageStore(tmp_path).path_of(bad)


def test_orphan_sweep_removes_unknown_and_temp_files_but_keeps_known(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    known = store.put(PNG)
    orphan = store.put(OTHER_PNG)
    temp = store.path_of(known.path).parent / f"{TEMP_PREFIX}abc.part"
    temp.write_bytes(b"half")
    assert store.orphan_sweep({known.path}, min_age_s=0) == 2
    assert store.path_of(known.path).exists()
    assert not store.path_of(orphan.path).exists()
    assert not temp.exists()


def test_orphan_sweep_spares_recent_files(tmp_path: Path) -> None:
    """A file just written may not have its row committed yet."""
    store = ImageStore(tmp_path)
    fresh = store.put(PNG)
    old = store.put(OTHER_PNG)
    hour_ago = time.time() - 3700
    os.utime(store.path_of(old.path), (hour_ago, hour_ago))
    assert store.orphan_sweep(set()) == 1
    assert store.path_of(fresh.path).exists()
    assert not store.path_of(old.path).exists()


def test_disk_usage_counts_png_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    store.put(PNG)
    store.put(OTHER_PNG)
    assert store.disk_usage() == (2, len(PNG) + len(OTHER_PNG))
    assert ImageStore(tmp_path / "missing").disk_usage() == (0, 0)
