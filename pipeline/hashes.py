"""The hashes A1111 and Civitai link files by, so a pasted recipe finds the files it names.

Plain hashlib, no torch: `Model hash` is the first 10 hex digits of a checkpoint's SHA-256
(8 digits of a hash of 64 KiB at 1 MiB in infotexts from before late 2022), `Lora hashes` the
first 12 of a LoRA's addnet hash, `TI hashes` the first 12 of an embedding's SHA-256.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000


def file_sha256(path: Path) -> str:
    """The SHA-256 of the whole file, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FileHashes:
    """The SHA-256 of files, each read once per version (path, size, modification time).

    Thread-safe: the bot's worker loops and its file server share one. It keeps the latest
    `limit` versions, so a long-running bot that hashes every picture it sends stays small.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._known: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def sha256_of(self, path: Path) -> str:
        """The file's SHA-256 (blocking: reads a file it has not seen in this version)."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._known.get(key)
        if known is None:
            known = file_sha256(path)
            with self._lock:
                self._known[key] = known
                while len(self._known) > self._limit:
                    del self._known[next(iter(self._known))]
        return known

    def find(self, paths: Iterable[Path], sha256: str) -> Path | None:
        """The first of `paths` that is a file with this SHA-256, or None (blocking)."""
        for path in paths:
            try:
                if self.sha256_of(path) == sha256:
                    return path
            except OSError:  # gone, or not a file
                continue
        return None


def addnet_hash(path: Path) -> str:
    """The sha256 of a safetensors file's tensor data, after its header.

    kohya's additional-networks extension started it, and A1111 and Civitai link LoRAs by it
    (`Lora hashes`), so editing a file's metadata does not change its identity.
    """
    digest = hashlib.sha256()
    with path.open("rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        file.seek(8 + header_length)
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def legacy_model_hash(path: Path) -> str:
    """A1111's first model hash: 8 hex digits of the SHA-256 of 64 KiB read at 1 MiB."""
    with path.open("rb") as file:
        file.seek(LEGACY_OFFSET)
        return hashlib.sha256(file.read(LEGACY_LENGTH)).hexdigest()[:8]
