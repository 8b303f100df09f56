"""The files a pasted recipe names (model, LoRAs, hypernetworks, embeddings), found among the
installed ones.

A1111 and Civitai link files by hash: `Model hash`, `Lora hashes` (by the name the prompt's tag
uses), `TI hashes`. A LoRA found by hash under another name has its tags renamed, as A1111's
paste does (`infotext_pasted` in A1111's Lora extension); a LoRA or hypernetwork that is not
installed has its tags cut, so the rest of the recipe still runs. Embeddings are found by name,
as A1111 finds them in a prompt. Every file that is missing or differs becomes a note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from pipeline.prompt.tags import rename_tags, tag_names
from pipeline.recipe import FileRef, Recipe

LORA_TAGS = ("lora", "lyco")
HYPERNET_TAGS = ("hypernet",)


class FileKind(StrEnum):
    MODEL = "model"
    LORA = "LoRA"
    HYPERNETWORK = "hypernetwork"
    EMBEDDING = "embedding"
    VAE = "VAE"


@dataclass(frozen=True)
class Match:
    """The installed file a reference resolves to.

    `same_hash` is True when the hashes agree, False when only the name matched and the hashes
    differ (another version of the file), None when there was no hash to compare.
    """

    name: str
    same_hash: bool | None = None


class Installed(Protocol):
    """What is installed, looked up by hash first, then by name (any case)."""

    def find(self, kind: FileKind, ref: FileRef) -> Match | None: ...


def match_files(recipe: Recipe, installed: Installed) -> Recipe:
    """The recipe with its files resolved: the model option set, tags renamed or cut, notes."""
    notes = list(recipe.notes)
    options = dict(recipe.options)
    if recipe.model is not None:
        found = _find(installed, FileKind.MODEL, recipe.model, notes)
        if found is None:
            notes.append(
                f"Model: {_label(recipe.model)} is not installed here: the default model draws "
                "it (an admin can put the checkpoint in MODELS_DIR)"
            )
        else:
            options["model"] = found
    prompt = recipe.prompt
    if prompt is not None:
        prompt = _resolve_tags(prompt, LORA_TAGS, FileKind.LORA, recipe, installed, notes)
        prompt = _resolve_tags(
            prompt, HYPERNET_TAGS, FileKind.HYPERNETWORK, recipe, installed, notes
        )
    if recipe.vae is not None and _find(installed, FileKind.VAE, recipe.vae, notes) is None:
        notes.append(
            f"VAE: {_label(recipe.vae)} is not the VAE used here: the model's own VAE, or the "
            "VAE setting, draws it"
        )
    for ref in recipe.ti_hashes:
        if _find(installed, FileKind.EMBEDDING, ref, notes) is None:
            notes.append(
                f"embedding {ref.name!r} is not installed: the word is read as plain text "
                "(an admin can add it to the embedding library)"
            )
    return replace(recipe, prompt=prompt, options=options, notes=tuple(dict.fromkeys(notes)))


def _resolve_tags(
    prompt: str,
    kinds: tuple[str, ...],
    kind: FileKind,
    recipe: Recipe,
    installed: Installed,
    notes: list[str],
) -> str:
    """The prompt with these tags pointing at installed files, and the rest cut out."""
    digests = {ref.name: ref.digest for ref in recipe.lora_hashes} if kind is FileKind.LORA else {}
    names = tag_names(prompt, kinds)
    renames: dict[str, str | None] = {}
    for name in names:
        ref = FileRef(name, digests.get(name, ""))
        found = _find(installed, kind, ref, notes)
        if found is None:
            notes.append(
                f"{kind} {_label(ref)} is not installed here: its tag is left out, so the image "
                f"differs (an admin can add it to the {kind} library)"
            )
        if found != name:
            renames[name] = found
    for ref in recipe.lora_hashes if kind is FileKind.LORA else ():
        if ref.name not in names:
            notes.append(f"Lora hashes: {ref.name!r} has no <lora:> tag in the prompt: left out")
    return rename_tags(prompt, kinds, renames)


def _find(installed: Installed, kind: FileKind, ref: FileRef, notes: list[str]) -> str | None:
    """The installed name for `ref`, noting a file that matched by name only."""
    match = installed.find(kind, ref)
    if match is None:
        return None
    if match.same_hash is False:
        notes.append(
            f"{kind} {ref.name or match.name!r}: the installed file has another hash than "
            f"{ref.digest}, so it is another version and the image may differ"
        )
    return match.name


def _label(ref: FileRef) -> str:
    if ref.name and ref.digest:
        return f"{ref.name!r} (hash {ref.digest})"
    return repr(ref.name) if ref.name else f"with hash {ref.digest}"
