"""The hashes A1111 and Civitai link files by, so a pasted recipe finds the files it names.

Plain hashlib, no torch: `Model hash` is the first 10 hex digits of a checkpoint's SHA-256
(8 digits of a hash of 64 KiB at 1 MiB in infotexts from before late 2022), `Lora hashes` the
first 12 of a LoRA's addnet hash, `TI hashes` the first 12 of an embedding's SHA-256.
"""

from __future__ import annotations

import hashlib
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
