"""Files a pasted recipe names, found as A1111's paste finds them: by hash, then by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.limits import Limits
from pipeline.recipe import FileRef, read_recipe
from pipeline.recipe_files import FileKind, Match, match_files

FIELDS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"


@dataclass
class Catalog:
    """Installed files as (name, hash) per kind; found by hash first, then by name, as the
    app's lookup is specified (`pipeline.recipe_files.Installed`)."""

    files: dict[FileKind, dict[str, str]] = field(default_factory=dict)

    def find(self, kind: FileKind, ref: FileRef) -> Match | None:
        installed = self.files.get(kind, {})
        for name, digest in installed.items():
            if ref.digest and digest == ref.digest:
                return Match(name, True)
        for name, digest in installed.items():
            if name.lower() == ref.name.lower():
                return Match(name, None if not ref.digest else digest == ref.digest)
        return None


def paste(text: str, catalog: Catalog, **given: object):
    return match_files(read_recipe(text, Limits(), given), catalog)


def test_a_lora_found_by_hash_under_another_name_has_its_tags_renamed() -> None:
    text = (
        "a girl <lora:add_detail:0.5>, <lora:add_detail:0.5:0.2>\n"
        f'{FIELDS}, Lora hashes: "add_detail: 7c6bad76eb54"'
    )
    catalog = Catalog({FileKind.LORA: {"detail_tweaker": "7c6bad76eb54"}})
    recipe = paste(text, catalog)
    assert recipe.prompt == "a girl <lora:detail_tweaker:0.5>, <lora:detail_tweaker:0.5:0.2>"
    assert recipe.notes == ()


def test_a_missing_lora_is_cut_from_the_prompt_with_a_note() -> None:
    hashes = 'Lora hashes: "add_detail: 7c6bad76eb54"'
    recipe = paste(f"a girl <lora:add_detail:0.5> <lyco:gone:1>\n{FIELDS}, {hashes}", Catalog())
    assert recipe.prompt == "a girl  "
    assert recipe.notes[0].startswith(
        "LoRA 'add_detail' (hash 7c6bad76eb54) is not installed here: its tag is left out"
    )
    assert recipe.notes[1].startswith("LoRA 'gone' is not installed here")


def test_a_lora_found_by_name_with_another_hash_is_used_and_noted() -> None:
    text = f'x <lora:Add_Detail:1>\n{FIELDS}, Lora hashes: "Add_Detail: 7c6bad76eb54"'
    recipe = paste(text, Catalog({FileKind.LORA: {"add_detail": "0123456789ab"}}))
    assert recipe.prompt == "x <lora:add_detail:1>"
    (note,) = recipe.notes
    assert "another hash than 7c6bad76eb54" in note


def test_a_lora_hash_without_a_tag_is_noted() -> None:
    text = f'x\n{FIELDS}, Lora hashes: "add_detail: 7c6bad76eb54"'
    assert paste(text, Catalog()).notes == (
        "Lora hashes: 'add_detail' has no <lora:> tag in the prompt: left out",
    )


def test_the_model_is_found_by_hash_then_by_name_else_noted() -> None:
    text = f"x\n{FIELDS}, Model hash: 7f96a1a9ca, Model: anything-v5"
    by_hash = Catalog({FileKind.MODEL: {"anythingV5_pruned": "7f96a1a9ca"}})
    assert paste(text, by_hash).options["model"] == "anythingV5_pruned"
    by_name = Catalog({FileKind.MODEL: {"anything-v5": "0000000000"}})
    recipe = paste(text, by_name)
    assert recipe.options["model"] == "anything-v5"
    assert "another hash" in recipe.notes[0]
    recipe = paste(text, Catalog())
    assert "model" not in recipe.options
    assert recipe.notes[0].startswith("Model: 'anything-v5' (hash 7f96a1a9ca) is not installed")


def test_a_model_given_with_the_paste_is_not_looked_up() -> None:
    text = f"x\n{FIELDS}, Model hash: 7f96a1a9ca, Model: anything-v5"
    recipe = paste(text, Catalog(), model="tiny")
    assert "model" not in recipe.options and recipe.notes == ()


def test_embeddings_are_found_by_name_and_a_hash_mismatch_noted() -> None:
    hashes = 'TI hashes: "easynegative: c74b4e810b03, bad: 0123456789ab"'
    text = f"x\nNegative prompt: easynegative, bad\n{FIELDS}, {hashes}"
    catalog = Catalog({FileKind.EMBEDDING: {"EasyNegative": "ffffffffffff"}})
    notes = paste(text, catalog).notes
    assert len(notes) == 2
    assert "embedding 'easynegative': the installed file has another hash" in notes[0]
    assert notes[1].startswith("embedding 'bad' is not installed: the word is read as plain text")


def test_hypernetwork_tags_are_found_by_name_or_cut() -> None:
    text = f"x <hypernet:Anime:0.5> <hypernet:gone>\n{FIELDS}"
    recipe = paste(text, Catalog({FileKind.HYPERNETWORK: {"anime": ""}}))
    assert recipe.prompt == "x <hypernet:anime:0.5> "
    assert any(note.startswith("hypernetwork 'gone' is not installed") for note in recipe.notes)


def test_a_prompt_given_with_the_paste_is_left_alone() -> None:
    text = f'x <lora:add_detail:1>\n{FIELDS}, Lora hashes: "add_detail: 7c6bad76eb54"'
    recipe = paste(text, Catalog(), prompt="a cat <lora:mine:1>")
    assert recipe.prompt is None and recipe.notes == ()
