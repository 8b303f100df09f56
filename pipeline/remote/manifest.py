"""A batch's file manifest: the library files its requests name, by kind, name and sha256.

A worker has no database and not the bot's disk: it learns from the manifest which LoRAs,
embeddings, hypernetworks, ControlNets and upscaler models a batch needs, and which stored
pictures its requests read (by their paths on the bot), and fetches by sha256 what it does
not hold. Names that do not resolve are left out: the bot checked them when the job was
submitted, so such a file was removed meanwhile, and the worker's engine then says so as it
would here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.hashes import FileHashes
from pipeline.prompt.embeddings import find_embeddings
from pipeline.request import GenerationRequest, Mode
from pipeline.upscalers import UpscalerCatalog

if TYPE_CHECKING:
    from pipeline.lora.source import FileSource


class FileManifest:
    """Makes manifests from the bot's libraries (see the module docstring)."""

    def __init__(
        self,
        libraries: Mapping[str, FileSource],
        upscalers: UpscalerCatalog | None = None,
        hashes: FileHashes | None = None,
    ) -> None:
        self._libraries = libraries
        """FileSources by manifest kind: loras, embeddings, hypernetworks, controlnets."""
        self._upscalers = upscalers
        self._hashes = hashes or FileHashes()
        """Upscaler models and pictures have no registry: hashed once per file version."""

    def __call__(self, requests: Sequence[GenerationRequest]) -> dict[str, dict[str, str]]:
        manifest: dict[str, dict[str, str]] = {}
        for kind, names in self._names(requests).items():
            library = self._libraries.get(kind)
            if library is None:
                continue
            for name in names:
                try:
                    manifest.setdefault(kind, {})[name] = library.resolve(name)[1]
                except UserError:
                    continue
        if upscalers := self._upscaler_files(requests):
            manifest["upscalers"] = upscalers
        if pictures := self._pictures(requests):
            manifest["pictures"] = pictures
        return manifest

    def _names(self, requests: Sequence[GenerationRequest]) -> dict[str, list[str]]:
        embeddings = self._libraries.get("embeddings")
        known = embeddings.names() if embeddings is not None else ()
        names: dict[str, list[str]] = {}
        for request in requests:
            for kind, found in (
                ("loras", [ref.name for ref in request.loras]),
                ("hypernetworks", [ref.name for ref in request.hypernets]),
                ("controlnets", [unit.model for unit in request.controls if unit.weight > 0]),
                (
                    "embeddings",
                    find_embeddings([(request.prompt, 1.0), (request.negative, 1.0)], known),
                ),
            ):
                listed = names.setdefault(kind, [])
                listed += [name for name in found if name not in listed]
        return names

    def _upscaler_files(self, requests: Sequence[GenerationRequest]) -> dict[str, str]:
        """The models of hires passes, and the upscale button's model for an upscale (the
        engine's `UpscalerCatalog.upscale_model`), by their names on the bot."""
        if self._upscalers is None:
            return {}
        files = {}
        for request in requests:
            if request.hires is not None:
                try:
                    path = self._upscalers.find(request.hires.upscaler).model_file
                except UserError:
                    continue
            elif request.mode is Mode.UPSCALE:
                model = self._upscalers.upscale_model()
                path = model.model_file if model is not None else None
            else:
                continue
            if path is not None and path.is_file():
                files[path.stem] = self._hashes.sha256_of(path)
        return files

    def _pictures(self, requests: Sequence[GenerationRequest]) -> dict[str, str]:
        """{path on the bot: sha256} of every picture the requests read that is on disk."""
        pictures = {}
        for request in requests:
            for path in request.pictures():
                if path in pictures:
                    continue
                try:
                    pictures[path] = self._hashes.sha256_of(Path(path))
                except OSError:  # gone: the worker's engine says so, as it would here
                    continue
        return pictures
