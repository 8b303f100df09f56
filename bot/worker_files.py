"""Library files for remote workers, named by kind and sha256: what the bot and workers share.

A batch names each file it needs in a manifest, `{kind: {name: sha256}}`; a worker that lacks
a file fetches it from the bot (`bot.file_server`) or reads it from a shared folder, and keeps
it by hash (`bot.file_cache`). This module holds what both sides agree on (the kinds, the URL
path, the signature of a request) and, on the bot, where each kind's files are. Pictures
(init images, masks, control maps, image prompts) are served only while a queued or running
job reads them. Checkpoints are not among the files: each worker has its own (MODELS_DIR,
hub cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from bot.library import (
    ControlNetLibrary,
    EmbeddingLibrary,
    HypernetworkLibrary,
    Library,
    LoraLibrary,
)
from bot.library_kinds import CONTROLNETS, EMBEDDINGS, HYPERNETWORKS, LORAS, MIB
from data.files import SUFFIX, FileStore
from pipeline.hashes import FileHashes
from pipeline.remote.messages import FILE_KINDS
from pipeline.upscalers import UpscalerCatalog

LORA, EMBEDDING, HYPERNETWORK, CONTROLNET, UPSCALER, PICTURE = FILE_KINDS
LIBRARY_FOLDERS = {
    LORA: LoraLibrary.folder,
    EMBEDDING: EmbeddingLibrary.folder,
    HYPERNETWORK: HypernetworkLibrary.folder,
    CONTROLNET: ControlNetLibrary.folder,
}
"""The folders under DATA_DIR where the libraries keep `<sha256>.safetensors` files."""
UPSCALERS_FOLDER = "upscalers"
"""Upscaler models are kept by their own names (`bot.models.upscaler_catalog`), not by hash."""
PICTURE_FOLDERS = ("uploads", "images")
"""Under DATA_DIR, the image stores (`data.images.ImageStore`) requests read pictures from:
uploads and control maps (`bot.uploads`), and generated images (upscale, variation)."""
MAX_BYTES = {
    LORA: LORAS.max_download_bytes,
    EMBEDDING: EMBEDDINGS.max_download_bytes,
    HYPERNETWORK: HYPERNETWORKS.max_download_bytes,
    CONTROLNET: CONTROLNETS.max_download_bytes,
    UPSCALER: 512 * MIB,
    PICTURE: 128 * MIB,
}
"""A worker stops a transfer past these: the libraries' own caps (an ESRGAN model is ~70 MB,
a 4096x4096 PNG at most ~64 MiB)."""
SIGNATURE_HEADER = "X-Dreamcord-Signature"
_SHA256 = re.compile(r"[0-9a-f]{64}")

Manifest = dict[str, dict[str, str]]
"""{kind: {name: sha256}}: the files a batch names (`pipeline.remote.messages.Batch`)."""


def parse_file_ref(kind: str, sha256: str) -> tuple[str, str]:
    """(kind, sha256) when both are well formed; ValueError otherwise.

    Only a known kind and 64 lowercase hex digits pass, so a path built from them cannot leave
    its folder, whatever a client sends.
    """
    if kind not in FILE_KINDS:
        raise ValueError(f"{kind!r} is not a kind of file: use one of {', '.join(FILE_KINDS)}")
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a sha256: 64 lowercase hex digits")
    return kind, sha256


def file_path(kind: str, sha256: str) -> str:
    """The URL path the bot serves a file at."""
    kind, sha256 = parse_file_ref(kind, sha256)
    return f"/files/{kind}/{sha256}"


def sign(secret: str, kind: str, sha256: str) -> str:
    """The request's signature: HMAC-SHA256 of `kind/sha256` under WORKER_SECRET.

    The secret itself never travels, so a listener on the network learns only the signature of
    a file it saw anyway.
    """
    message = f"{kind}/{sha256}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_ok(secret: str, kind: str, sha256: str, given: str | None) -> bool:
    """Whether `given` is the request's signature, compared in constant time."""
    return given is not None and hmac.compare_digest(sign(secret, kind, sha256), given)


class UpscalerHashes:
    """The upscaler model in a folder that has a sha256; the folder's files keep their names,
    so a changed file (same name, new size or time) is hashed again."""

    def __init__(self, folder: Path | None, hashes: FileHashes | None = None) -> None:
        self.folder = folder
        self._hashes = hashes or FileHashes()

    def find(self, sha256: str) -> Path | None:
        """The model file with this sha256, if the folder has one (blocking: hashes new files)."""
        if self.folder is None or not self.folder.is_dir():
            return None
        return self._hashes.find(sorted(self.folder.glob(f"*{SUFFIX}")), sha256)


Pictures = Callable[[], Awaitable[Collection[str]]]
"""The pictures queued and running jobs read (`data.jobs.JobRepository.active_pictures`)."""


class LibraryFiles:
    """On the bot: every file a worker may ask for, by kind and sha256.

    Which files a batch names is `pipeline.remote.manifest`'s; this finds them by hash. A
    picture is looked for only among those a queued or running job reads, so a worker (or
    anyone holding the secret) can have no other file of the bot's disk.
    """

    def __init__(
        self,
        stores: Mapping[str, FileStore],
        upscalers: UpscalerCatalog,
        pictures: Pictures,
        hashes: FileHashes | None = None,
    ) -> None:
        self.stores = stores
        self._pictures = pictures
        self._hashes = hashes or FileHashes()
        self.upscaler_hashes = UpscalerHashes(upscalers.folder, self._hashes)

    @classmethod
    def over(
        cls,
        loras: LoraLibrary,
        embeddings: EmbeddingLibrary,
        hypernetworks: HypernetworkLibrary,
        controlnets: ControlNetLibrary,
        upscalers: UpscalerCatalog,
        pictures: Pictures,
        hashes: FileHashes | None = None,
    ) -> LibraryFiles:
        parts: dict[str, Library[Any, Any]] = {
            LORA: loras,
            EMBEDDING: embeddings,
            HYPERNETWORK: hypernetworks,
            CONTROLNET: controlnets,
        }
        return cls({kind: part.store for kind, part in parts.items()}, upscalers, pictures, hashes)

    async def find(self, kind: str, sha256: str) -> Path | None:
        """The stored file of this kind and sha256, or None."""
        kind, sha256 = parse_file_ref(kind, sha256)
        if kind == PICTURE:
            # Stored pictures are named by their hash: try those first, hash the rest.
            paths = sorted(map(Path, await self._pictures()), key=lambda p: sha256 not in p.name)
            return await asyncio.to_thread(self._hashes.find, paths, sha256)
        if kind == UPSCALER:
            return await asyncio.to_thread(self.upscaler_hashes.find, sha256)
        path = self.stores[kind].path_of(sha256)
        return path if await asyncio.to_thread(path.is_file) else None
