"""Pasted A1111 recipes, read for the CLI and Discord alike: fields, installed files, notes.

Finding a file by hash means hashing the installed ones, which reads gigabytes for checkpoints.
So a file whose name matches is checked first and alone, the others only when that fails, and
every hash is kept for the process's life (by path, size and modification time). Reading can
block for that long: call `RecipeReader.read` off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.models import limits_of, model_sources
from bot.settings import Settings
from pipeline.hashes import addnet_hash, file_sha256, legacy_model_hash
from pipeline.models import ModelKind, ModelSource
from pipeline.recipe import FileRef, Recipe, read_recipe
from pipeline.recipe_files import FileKind, Match, match_files

if TYPE_CHECKING:
    from pipeline.lora.source import FileSource

LEGACY_DIGITS = 8
"""A `Model hash` of 8 hex digits is A1111's first, partial hash; longer ones prefix a SHA-256."""

Check = Callable[[str], bool]
"""Whether a file has the given short hash."""


class FileHashes:
    """Hashes of files by (path, size, mtime), so each file is read once while it is unchanged."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, Path, int, int], str] = {}
        self._lock = threading.Lock()

    def of(self, path: Path, how: Callable[[Path], str]) -> str:
        """`how(path)`, remembered; "" for a file that cannot be read."""
        try:
            stat = path.stat()
        except OSError:
            return ""
        key = (how.__name__, path, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._known:
                return self._known[key]
        try:
            digest = how(path)
        except OSError:
            return ""
        with self._lock:
            self._known[key] = digest
        return digest


class InstalledFiles:
    """The configured models and the libraries' files, found as `pipeline.recipe_files` asks."""

    def __init__(
        self,
        models: Mapping[str, ModelSource],
        libraries: Mapping[FileKind, FileSource | None],
        hashes: FileHashes,
        vae: Path | None = None,
    ) -> None:
        """`vae` is the replacement VAE every model draws with (the VAE setting), if any."""
        self.models = models
        self.libraries = libraries
        self.hashes = hashes
        self.vae = vae

    def find(self, kind: FileKind, ref: FileRef) -> Match | None:
        if kind is FileKind.MODEL:
            files = {name: self._model_check(source) for name, source in self.models.items()}
            return _find(files, ref)
        if kind is FileKind.VAE:
            vae = self.vae
            return None if vae is None else _find({vae.name: self._file_check(vae)}, ref)
        library = self.libraries.get(kind)
        if library is None:
            return None
        files = {}
        for name in library.names():
            path, sha256 = library.resolve(name)
            files[name] = self._library_check(path, sha256, addnet=kind is FileKind.LORA)
        return _find(files, ref)

    def _model_check(self, source: ModelSource) -> Check | None:
        """How to tell a checkpoint file by a `Model hash`; None for models without one."""
        path = source.path
        if source.kind is not ModelKind.SINGLE_FILE or path is None:
            return None
        return self._file_check(path)

    def _file_check(self, path: Path) -> Check | None:
        """A file by A1111's short hash (a prefix of its SHA-256) or its old 8-digit one; a
        folder (a diffusers VAE) has no hash to tell it by."""
        if path.is_dir():
            return None

        def check(digest: str) -> bool:
            if len(digest) == LEGACY_DIGITS:
                return self.hashes.of(path, legacy_model_hash) == digest
            return _prefixes(self.hashes.of(path, file_sha256), digest)

        return check

    def _library_check(self, path: Path, sha256: str, addnet: bool) -> Check:
        """A library file by its SHA-256 (known already), or a LoRA by its addnet hash, which
        A1111 writes; Civitai's AutoV2 and other tools use the file's SHA-256."""

        def check(digest: str) -> bool:
            if _prefixes(sha256, digest):
                return True
            return addnet and _prefixes(self.hashes.of(path, addnet_hash), digest)

        return check


def _find(files: Mapping[str, Check | None], ref: FileRef) -> Match | None:
    """By name first (hashing only that file), then by hash among all, then by name alone."""
    named = next((name for name in files if name.lower() == ref.name.lower()), None)
    if named is not None:
        check = files[named]
        if not ref.digest or check is None:
            return Match(named)
        if check(ref.digest):
            return Match(named, True)
    if ref.digest:
        for name, other in files.items():
            if name != named and other is not None and other(ref.digest):
                return Match(name, True)
    return Match(named, False) if named is not None else None


def _prefixes(full: str, digest: str) -> bool:
    return bool(full) and bool(digest) and full.startswith(digest)


class RecipeReader:
    """Reads pasted infotexts against this installation's models and libraries."""

    def __init__(
        self,
        settings: Settings,
        libraries: tuple[FileSource, FileSource, FileSource | None],
        model_override: str | None = None,
    ) -> None:
        """`libraries` are the (LoRA, embedding, hypernetwork) ones; `model_override` is the
        CLI's --model, which alone is then installed."""
        self.settings = settings
        loras, embeddings, hypernets = libraries
        self.libraries = {
            FileKind.LORA: loras,
            FileKind.EMBEDDING: embeddings,
            FileKind.HYPERNETWORK: hypernets,
        }
        self.model_override = model_override
        self.hashes = FileHashes()

    def read(self, text: str, given: Mapping[str, Any] | None = None) -> Recipe:
        """The recipe with its files found; blocking (it may hash files): not on the loop."""
        recipe = read_recipe(text, limits_of(self.settings), given)
        sources, _ = model_sources(self.settings, self.model_override)
        models = {name: model for name, model in sources.items() if not model.txt2img_refusal}
        vae = Path(self.settings.vae).expanduser() if self.settings.vae else None
        installed = InstalledFiles(models, self.libraries, self.hashes, vae)
        return match_files(recipe, installed)
