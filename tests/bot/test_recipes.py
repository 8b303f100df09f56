"""Installed files found by the hashes A1111 and Civitai write, computed here as they define them.

`Model hash`: the first 10 hex digits of the checkpoint's SHA-256 (A1111's `calculate_sha256`),
or, in old infotexts, 8 of the SHA-256 of the 64 KiB at offset 1 MiB (its `model_hash`).
`Lora hashes`: 12 of the SHA-256 of a safetensors file after its header (the addnet hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from bot.recipes import FileHashes, InstalledFiles
from pipeline.models import ModelKind, ModelSource
from pipeline.recipe import FileRef, Recipe
from pipeline.recipe_files import FileKind, Match, match_files


class Library:
    """A library as the engine sees it (`FileSource`): names, and (path, sha256) by name."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def names(self) -> list[str]:
        return list(self.files)

    def resolve(self, name: str) -> tuple[Path, str]:
        path = self.files[name]
        return path, hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint(path: Path, seed: int) -> Path:
    path.write_bytes(os.urandom(8) + bytes([seed]) * (0x100000 + 0x20000))
    return path


def safetensors(path: Path, payload: bytes, metadata: str) -> Path:
    header = json.dumps({"__metadata__": {"note": metadata}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + payload)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "anything-v5": checkpoint(tmp_path / "anything-v5.safetensors", 1),
        "other": checkpoint(tmp_path / "other.safetensors", 2),
        "detail_tweaker": safetensors(tmp_path / "a.safetensors", b"\x01" * 4096, "mine"),
    }


def installed(files: dict[str, Path]) -> InstalledFiles:
    models = {
        name: ModelSource(name, str(files[name]), ModelKind.SINGLE_FILE, files[name])
        for name in ("anything-v5", "other")
    }
    models["tiny"] = ModelSource("tiny", "tiny", ModelKind.TINY)
    loras = Library({"detail_tweaker": files["detail_tweaker"]})
    return InstalledFiles(models, {FileKind.LORA: loras}, FileHashes())


def test_a_checkpoint_is_found_by_its_a1111_hash_whatever_its_name(files) -> None:
    digest = hashlib.sha256(files["other"].read_bytes()).hexdigest()[:10]
    found = installed(files).find(FileKind.MODEL, FileRef("renamed", digest))
    assert found == Match("other", True)


def test_the_old_eight_digit_model_hash_is_understood(files) -> None:
    data = files["anything-v5"].read_bytes()[0x100000 : 0x100000 + 0x10000]
    old = hashlib.sha256(data).hexdigest()[:8]
    assert installed(files).find(FileKind.MODEL, FileRef("", old)) == Match("anything-v5", True)


def test_a_name_with_another_hash_is_found_and_marked(files) -> None:
    found = installed(files).find(FileKind.MODEL, FileRef("Anything-V5", "0123456789"))
    assert found == Match("anything-v5", False)
    assert installed(files).find(FileKind.MODEL, FileRef("tiny", "0123456789")) == Match("tiny")
    assert installed(files).find(FileKind.MODEL, FileRef("missing", "0123456789")) is None


def test_a_lora_is_found_by_its_addnet_hash(files) -> None:
    raw = files["detail_tweaker"].read_bytes()
    header = struct.unpack("<Q", raw[:8])[0]
    addnet = hashlib.sha256(raw[8 + header :]).hexdigest()[:12]
    found = installed(files).find(FileKind.LORA, FileRef("add_detail", addnet))
    assert found == Match("detail_tweaker", True)
    whole = hashlib.sha256(raw).hexdigest()[:10]  # Civitai's AutoV2 names the whole file
    assert installed(files).find(FileKind.LORA, FileRef("x", whole)) == Match(
        "detail_tweaker", True
    )


def test_the_vae_setting_is_found_by_the_hash_a1111_writes_for_it(files, tmp_path: Path) -> None:
    vae = checkpoint(tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors", 3)
    digest = hashlib.sha256(vae.read_bytes()).hexdigest()[:10]  # A1111's `VAE hash`
    with_vae = InstalledFiles({}, {}, FileHashes(), vae)
    assert with_vae.find(FileKind.VAE, FileRef("renamed.safetensors", digest)) == Match(
        vae.name, True
    )
    assert installed(files).find(FileKind.VAE, FileRef(vae.name, digest)) is None
    recipe = Recipe(prompt="a fox", negative="", vae=FileRef("other.pt", "0123456789"))
    (note,) = match_files(recipe, with_vae).notes
    assert note.startswith("VAE: 'other.pt' (hash 0123456789) is not the VAE used here")
    assert match_files(replace(recipe, vae=FileRef(vae.name, digest)), with_vae).notes == ()


def test_the_addnet_hash_ignores_the_header_as_kohya_made_it(tmp_path: Path) -> None:
    one = safetensors(tmp_path / "one.safetensors", b"\x07" * 512, "first")
    two = safetensors(tmp_path / "two.safetensors", b"\x07" * 512, "edited metadata")
    library = Library({"one": one})
    files = InstalledFiles({}, {FileKind.LORA: library}, FileHashes())
    raw = two.read_bytes()
    addnet = hashlib.sha256(raw[8 + struct.unpack("<Q", raw[:8])[0] :]).hexdigest()[:12]
    assert files.find(FileKind.LORA, FileRef("two", addnet)) == Match("one", True)


def test_a_hash_is_computed_once_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a")
    calls = []

    def digest(file: Path) -> str:
        calls.append(file)
        return hashlib.sha256(file.read_bytes()).hexdigest()

    hashes = FileHashes()
    first = hashes.of(path, digest)
    assert hashes.of(path, digest) == first and len(calls) == 1
    path.write_bytes(b"bb")
    assert hashes.of(path, digest) != first and len(calls) == 2
    assert hashes.of(tmp_path / "gone.bin", digest) == ""
