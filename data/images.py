"""Content-addressed PNG files on disk, written so that no reader ever sees a partial file.

Every method does blocking disk I/O: call them from a worker thread (`asyncio.to_thread`), never
directly on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from data.disk import reporting_full_disk

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEMP_PREFIX = ".tmp-"
ORPHAN_MIN_AGE_S = 3600.0
"""Files younger than this are never swept: the row that will reference a file just written
by `put` may not be committed yet."""


@dataclass(frozen=True)
class StoredImage:
    path: str
    """Relative to the store root, with forward slashes, as stored in `images.path`."""
    sha256: str
    size_bytes: int


class ImageStore:
    """PNG files named by the sha256 of their bytes under `root/ab/cd/<sha256>.png`.

    Identical images (a reroll with the same seed) share one file. Two levels of fan-out keep
    each directory small at millions of images.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, png_bytes: bytes) -> StoredImage:
        """Write the image durably (sync, blocking) and return where it lives."""
        if not png_bytes.startswith(PNG_SIGNATURE):
            raise ValueError("ImageStore.put expects PNG bytes")
        sha256 = hashlib.sha256(png_bytes).hexdigest()
        stored = StoredImage(_relative(sha256), sha256, len(png_bytes))
        final = self.path_for(sha256)
        if final.exists() and final.stat().st_size == len(png_bytes):
            return stored
        with reporting_full_disk(self.root):
            final.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(final, png_bytes)
        return stored

    def path_for(self, sha256: str) -> Path:
        """Where the PNG whose bytes have this sha256 is (or would be) stored."""
        return self.root / _relative(sha256)

    def path_of(self, relative: str) -> Path:
        """The absolute path of a stored image; refuses paths that would leave the root."""
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise ValueError(f"{relative!r} is not a path inside the image store")
        return self.root.joinpath(*parts)

    def orphan_sweep(self, known_paths: Iterable[str], min_age_s: float = ORPHAN_MIN_AGE_S) -> int:
        """Delete files no row references and leftover temp files (sync, blocking).

        Such files come from a crash between writing an image and committing its row. Only
        files older than `min_age_s` go, so a write in progress is never taken. Returns how
        many files were removed.
        """
        keep = {str(PurePosixPath(path)) for path in known_paths}
        cutoff = time.time() - min_age_s
        removed = 0
        for file in self.root.glob("*/*/*"):
            relative = file.relative_to(self.root).as_posix()
            if relative in keep and not file.name.startswith(TEMP_PREFIX):
                continue
            # Another sweep or a finishing write may remove or rename it under us.
            with contextlib.suppress(FileNotFoundError):
                if file.is_file() and file.stat().st_mtime <= cutoff:
                    file.unlink()
                    removed += 1
        return removed

    def disk_usage(self) -> tuple[int, int]:
        """(file count, total bytes) of the stored images (sync, blocking)."""
        count = total = 0
        for file in self.root.glob("*/*/*.png"):
            with contextlib.suppress(FileNotFoundError):
                total += file.stat().st_size
                count += 1
        return count, total


def _relative(sha256: str) -> str:
    return str(PurePosixPath(sha256[:2], sha256[2:4], f"{sha256}.png"))


def _write_atomically(final: Path, payload: bytes) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory.

    `os.replace` within one filesystem is atomic, so readers see no file or the whole file;
    the directory fsync makes the new name itself survive a power cut.
    """
    fd, temp_name = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as temp:
            # mkstemp makes 0600 files; images are meant to be readable by other tools.
            os.fchmod(temp.fileno(), 0o644)
            temp.write(payload)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
