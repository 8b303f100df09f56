"""A worker's library files: fetched once from the bot, kept by sha256, resolved per batch.

Before each batch the worker calls `WorkerFiles.prepare_batch(batch)`: every file the
manifest names is found in the shared folder (WORKER_FILES_DIR), in the cache under DATA_DIR,
or else fetched from the bot's file server (WORKER_FILES_URL). A fetch is verified against its
sha256 while it streams and only a whole, matching file gets its final name; two batches that
need the same missing file share one download. The engine then reads the manifest's names
through `FileSource`s (`ManifestFiles`) and an upscaler catalog of the manifest's models, and
the batch's requests read their pictures from this worker's copies.

Torch-free: the worker's event loop runs this; the engine's thread reads only the snapshots.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import aiohttp

from bot.library_kinds import MIB
from bot.settings import Settings
from bot.worker_files import (
    CONTROLNET,
    EMBEDDING,
    FILE_KINDS,
    HYPERNETWORK,
    LIBRARY_FOLDERS,
    LORA,
    MAX_BYTES,
    PICTURE,
    PICTURE_FOLDERS,
    SIGNATURE_HEADER,
    UPSCALER,
    UPSCALERS_FOLDER,
    Manifest,
    UpscalerHashes,
    file_path,
    sign,
)
from data.files import SUFFIX, TEMP_PREFIX, FileStore, Staged
from data.images import ImageStore
from pipeline.errors import UserError
from pipeline.remote.messages import Batch
from pipeline.upscalers import MODEL_DENOISE, UPSCALERS, Upscaler, UpscalerCatalog

log = logging.getLogger(__name__)

CACHE_FOLDER = "worker-files"
"""Under the worker's DATA_DIR: one folder per kind of `<sha256>.safetensors` files (pictures:
`<sha256>`, their format is in their bytes)."""
FETCH_TIMEOUT_S = 600.0
CHUNK = MIB
WHAT = {
    LORA: "LoRA",
    EMBEDDING: "embedding",
    HYPERNETWORK: "hypernetwork",
    CONTROLNET: "ControlNet",
    UPSCALER: "upscaler",
    PICTURE: "picture",
}


class FileUnavailable(UserError):
    """A file a batch names could not be had on this worker; the message says why."""


class BotFiles:
    """The bot's file server, asked with signed requests."""

    def __init__(
        self, base_url: str, secret: str, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self._session = session

    async def chunks(self, kind: str, sha256: str) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; FileUnavailable for a refusal or a lost bot."""
        url = self.base_url + file_path(kind, sha256)
        headers = {SIGNATURE_HEADER: sign(self.secret, kind, sha256)}
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        session = self._session or aiohttp.ClientSession()
        try:
            async with session.get(url, headers=headers, timeout=timeout) as response:
                _check_status(response.status, kind, sha256, url)
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as error:
            raise FileUnavailable(
                f"cannot fetch {url} ({error or type(error).__name__}): check WORKER_FILES_URL "
                "and that the bot is running with QUEUE_URL set"
            ) from None
        finally:
            if self._session is None:
                await session.close()


def _check_status(status: int, kind: str, sha256: str, url: str) -> None:
    if status == 401:
        raise FileUnavailable(
            "the bot refused this worker's signature: set the same WORKER_SECRET on the bot "
            "and on every worker"
        )
    if status == 404:
        raise FileUnavailable(
            f"the bot has no {WHAT[kind]} file {sha256[:12]}: it was removed from the library "
            "since the batch was planned; try again"
        )
    if status != 200:
        raise FileUnavailable(f"{url} answered HTTP {status}: see the bot's log")


class SharedFolder:
    """WORKER_FILES_DIR: a read-only copy (a mount) of the bot's DATA_DIR, read in place."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.upscalers = UpscalerHashes(folder / UPSCALERS_FOLDER)

    def find(self, kind: str, sha256: str) -> Path | None:
        """The file of this kind and sha256 in the folder, or None (blocking)."""
        if kind == UPSCALER:
            return self.upscalers.find(sha256)
        if kind == PICTURE:
            stored = (ImageStore(self.folder / name).path_for(sha256) for name in PICTURE_FOLDERS)
            return next((path for path in stored if path.is_file()), None)
        path = FileStore(self.folder / LIBRARY_FOLDERS[kind]).path_of(sha256)
        return path if path.is_file() else None


class ManifestFiles:
    """One kind's names in the current batch's manifest, as the engine's `FileSource`."""

    def __init__(self, kind: str) -> None:
        self.what = WHAT[kind]
        self._entries: dict[str, tuple[str, Path, str]] = {}

    def use(self, entries: Mapping[str, tuple[Path, str]]) -> None:
        """Swap in the next batch's names; one assignment, so the engine thread sees either."""
        self._entries = {name.lower(): (name, *found) for name, found in entries.items()}

    def names(self) -> list[str]:
        return [name for name, _, _ in self._entries.values()]

    def resolve(self, name: str) -> tuple[Path, str]:
        entry = self._entries.get(name.lower())
        if entry is None:
            raise UserError(
                f"the batch named no {self.what} {name!r}: it was not sent to this worker"
            )
        return entry[1], entry[2]


class ManifestUpscalers(UpscalerCatalog):
    """The built-in upscalers and the current batch's upscaler models, under their bot names.

    Frozen like the catalog it stands in for: `use` swaps the models in one assignment.
    """

    _models: dict[str, Upscaler]

    def __init__(self) -> None:
        super().__init__(None)
        object.__setattr__(self, "_models", {})

    def use(self, entries: Mapping[str, tuple[Path, str]]) -> None:
        models = {
            name.lower(): Upscaler(name, default_denoise=MODEL_DENOISE, model_file=path)
            for name, (path, _) in entries.items()
            if name.lower() not in UPSCALERS
        }
        object.__setattr__(self, "_models", models)

    def _installed(self) -> dict[str, Upscaler]:
        return self._models


class WorkerFiles:
    """The worker's files: shared folder first, then the cache, then a fetch from the bot."""

    def __init__(
        self, cache_dir: Path, bot: BotFiles | None = None, shared: SharedFolder | None = None
    ) -> None:
        self.cache_dir = cache_dir
        self.bot = bot
        self.shared = shared
        self.sources = {
            kind: ManifestFiles(kind) for kind in FILE_KINDS if kind not in (UPSCALER, PICTURE)
        }
        self.upscalers = ManifestUpscalers()
        self.downloads = 0
        """Transfers started since the worker began (a test's and the log's count)."""
        self._pending: dict[tuple[str, str], asyncio.Future[Path]] = {}

    async def prepare_batch(self, batch: Batch) -> Batch:
        """`prepare` the batch's manifest; the batch with its requests reading this worker's
        copies of their pictures (the paths they name are the bot's)."""
        pictures = await self.prepare(batch.manifest)
        tasks = tuple(
            replace(task, request=task.request.with_pictures(pictures)) for task in batch.tasks
        )
        return replace(batch, tasks=tasks)

    async def prepare(self, manifest: Manifest) -> dict[str, str]:
        """Have every file of `manifest` on disk, then make its names the engine's; returns
        where each of its pictures is here, by its path on the bot.

        Call it before each batch, never while one runs. A file that cannot be had is a
        FileUnavailable, and the names stay those of the batch before.
        """
        wanted = [
            (kind, name, sha) for kind, files in manifest.items() for name, sha in files.items()
        ]
        paths = await asyncio.gather(*(self.path(kind, sha) for kind, _, sha in wanted))
        found: dict[str, dict[str, tuple[Path, str]]] = {kind: {} for kind in FILE_KINDS}
        for (kind, name, sha256), path in zip(wanted, paths, strict=True):
            found[kind][name] = (path, sha256)
        for kind, source in self.sources.items():
            source.use(found[kind])
        self.upscalers.use(found[UPSCALER])
        return {name: str(path) for name, (path, _) in found[PICTURE].items()}

    async def path(self, kind: str, sha256: str) -> Path:
        """Where the file of this kind and sha256 is on this worker, fetching it if need be."""
        if self.shared is not None:
            path = await asyncio.to_thread(self.shared.find, kind, sha256)
            if path is not None:
                return path
        cached = self._store(kind).path_of(sha256)
        if await asyncio.to_thread(cached.is_file):
            return cached
        if self.bot is None:
            where = f"in WORKER_FILES_DIR={self.shared.folder}" if self.shared else "here"
            raise FileUnavailable(
                f"the {WHAT[kind]} file {sha256[:12]} is not {where}: set the worker's "
                "WORKER_FILES_URL to the bot's file server, or WORKER_FILES_DIR to a copy of "
                "the bot's DATA_DIR"
            )
        key = (kind, sha256)
        if key not in self._pending:
            self._pending[key] = asyncio.ensure_future(self._download(kind, sha256))
            self._pending[key].add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(self._pending[key])

    def _store(self, kind: str) -> FileStore:
        return FileStore(self.cache_dir / kind, "" if kind == PICTURE else SUFFIX)

    async def _download(self, kind: str, sha256: str) -> Path:
        """Stream the file into a temp file beside the cache, hashing it; place it if it matches."""
        assert self.bot is not None
        self.downloads += 1
        store = self._store(kind)
        temp_dir = Path(await asyncio.to_thread(_temp_folder, store.folder))
        temp = temp_dir / f"{sha256}{SUFFIX}"
        try:
            out = await asyncio.to_thread(temp.open, "xb")
            try:
                digest, size = await self._receive(kind, sha256, out)
                await asyncio.to_thread(_flush, out)
            finally:
                await asyncio.to_thread(out.close)
            if digest != sha256:
                raise FileUnavailable(
                    f"the {WHAT[kind]} file {sha256[:12]} arrived changed (its sha256 is "
                    f"{digest[:12]}): nothing was kept; check the network between the bot and "
                    "this worker"
                )
            await asyncio.to_thread(store.place, Staged(temp, sha256, size))
        finally:
            await asyncio.to_thread(shutil.rmtree, temp_dir, True)
        log.info("fetched %s %s (%d bytes) from the bot", kind, sha256[:12], size)
        return store.path_of(sha256)

    async def _receive(self, kind: str, sha256: str, out: BinaryIO) -> tuple[str, int]:
        assert self.bot is not None
        digest, size, cap = hashlib.sha256(), 0, MAX_BYTES[kind]
        async for chunk in self.bot.chunks(kind, sha256):
            size += len(chunk)
            if size > cap:
                raise FileUnavailable(
                    f"the {WHAT[kind]} file {sha256[:12]} is over {cap // MIB} MiB: refused"
                )
            digest.update(chunk)
            await asyncio.to_thread(out.write, chunk)
        return digest.hexdigest(), size


def worker_files(settings: Settings) -> WorkerFiles:
    """A worker's files as WORKER_FILES_DIR and WORKER_FILES_URL (with WORKER_SECRET) say."""
    bot = None
    if settings.worker_files_url is not None:
        if settings.worker_secret is None:
            raise UserError(
                "WORKER_FILES_URL is set but WORKER_SECRET is not: set the bot's WORKER_SECRET "
                "here too"
            )
        bot = BotFiles(settings.worker_files_url, settings.worker_secret.get_secret_value())
    shared = SharedFolder(settings.worker_files_dir) if settings.worker_files_dir else None
    if bot is None and shared is None:
        log.warning(
            "no WORKER_FILES_URL or WORKER_FILES_DIR: batches with LoRAs or pictures will fail here"
        )
    return WorkerFiles(settings.data_dir / CACHE_FOLDER, bot, shared)


def _temp_folder(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(dir=folder, prefix=TEMP_PREFIX)


def _flush(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
