"""A batch's file manifest: the library files its requests name, by kind, name and sha256.

A worker has no database: it learns from the manifest which LoRAs, embeddings, hypernetworks,
ControlNets and upscaler models a batch needs, and fetches by sha256 what it does not hold.
Names that do not resolve are left out: the bot checked them when the job was submitted, so
such a file was removed meanwhile, and the worker's engine then says so as it would here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.hashes import file_sha256
from pipeline.prompt.embeddings import find_embeddings
from pipeline.request import GenerationRequest
from pipeline.upscalers import UpscalerCatalog

if TYPE_CHECKING:
    from pipeline.lora.source import FileSource


class FileManifest:
    """Makes manifests from the bot's libraries (see the module docstring)."""

    def __init__(
        self, libraries: Mapping[str, FileSource], upscalers: UpscalerCatalog | None = None
    ) -> None:
        self._libraries = libraries
        """FileSources by manifest kind: loras, embeddings, hypernetworks, controlnets."""
        self._upscalers = upscalers
        self._hashes: dict[tuple[Path, int, int], str] = {}
        """Upscaler models have no registry: their sha256 is read once per file version."""

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
        files = {}
        for request in requests:
            if request.hires is None or self._upscalers is None:
                continue
            try:
                path = self._upscalers.find(request.hires.upscaler).model_file
            except UserError:
                continue
            if path is not None and path.is_file():
                stat = path.stat()
                key = (path, stat.st_size, stat.st_mtime_ns)
                if key not in self._hashes:
                    self._hashes[key] = file_sha256(path)
                files[path.stem] = self._hashes[key]
        return files
