"""Adapter files on disk: `.safetensors` files named by their sha256, written atomically.

A file is first staged (copied and hashed beside the final files), then placed under its final
name, so no half-written or unchecked file ever has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from data.disk import reporting_full_disk

SUFFIX = ".safetensors"
TEMP_PREFIX = ".tmp-"
COPY_CHUNK = 1 << 20
STALE_TEMP_S = 3600.0
"""Temp files younger than this may belong to a copy or download still in progress."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Staged:
    """A copy of an incoming file in a temporary folder inside the store's folder.

    The copy keeps the file's own name, so that inspection messages name what the user knows.
    """

    temp: Path
    sha256: str
    size: int


class FileStore:
    """`.safetensors` files (or others, by `suffix`) named by their sha256 in one folder,
    written atomically."""

    def __init__(self, folder: Path, suffix: str = SUFFIX) -> None:
        self.folder = folder
        self.suffix = suffix

    def path_of(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"{sha256!r} is not a sha256 hex digest")
        return self.folder / f"{sha256}{self.suffix}"

    def stage(self, source: Path, filename: str) -> Staged:
        """Copy `source` beside the final files as `filename`, hashing it, and fsync it.

        The copy is removed if anything fails, so only whole copies remain.
        """
        with reporting_full_disk(self.folder):
            return self._copy(source, filename)

    def _copy(self, source: Path, filename: str) -> Staged:
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=self.folder, prefix=TEMP_PREFIX)) / filename
        digest = hashlib.sha256()
        size = 0
        try:
            with temp.open("xb") as out, source.open("rb") as file:
                os.fchmod(out.fileno(), 0o644)
                while chunk := file.read(COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            shutil.rmtree(temp.parent, ignore_errors=True)
            raise
        return Staged(temp, digest.hexdigest(), size)

    def discard(self, staged: Staged) -> None:
        """Remove a staged copy's temporary folder (and the copy, unless it was placed)."""
        shutil.rmtree(staged.temp.parent, ignore_errors=True)

    def place(self, staged: Staged) -> bool:
        """Give a staged copy its final name; False when that file is already stored."""
        final = self.path_of(staged.sha256)
        if final.exists():
            return False
        os.replace(staged.temp, final)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # so the new name itself survives a power cut
        finally:
            os.close(directory)
        return True

    def delete(self, sha256: str) -> None:
        self.path_of(sha256).unlink(missing_ok=True)

    def remove_stale_temps(self, min_age_s: float = STALE_TEMP_S) -> None:
        """Delete copies and downloads left by a crash or a cancellation, once old enough."""
        cutoff = time.time() - min_age_s
        for temp in self.folder.glob(f"{TEMP_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if temp.stat().st_mtime > cutoff:
                    continue
                if temp.is_dir():
                    shutil.rmtree(temp, ignore_errors=True)
                else:
                    temp.unlink()

    def write_temp(self, data: bytes) -> Path:
        """Keep `data` (an upload) in a temp file beside the final files, to be added."""
        with reporting_full_disk(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.folder, prefix=TEMP_PREFIX, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
        return Path(name)
