"""`dreamcord prompt`: a readable table, one JSON object, or a JSON array for a batch file."""

from __future__ import annotations

import argparse
import json

import pytest

from bot.cli import prompt
from bot.settings import load_settings
from pipeline.errors import UserError


@pytest.fixture(scope="module")
def settings():
    return load_settings(None)


def parse_args(*argv):
    parser = argparse.ArgumentParser()
    prompt.register(parser.add_subparsers())
    return parser.parse_args(["prompt", *argv])


def run(settings, *argv, lookup=prompt.installed_names):
    args = parse_args(*argv)
    return args.handler(args, settings, lookup)


def test_json_output_has_the_documented_fields(settings, capsys):
    code = run(
        settings,
        "a fox <lora:Ghibli:0.7>, (fur:1.2) BREAK snow --ar 3:2 --seed 5",
        "--negative",
        "EasyNegative",
        "--json",
        "--loras",
        "Ghibli",
        "--embeddings",
        "EasyNegative",
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["attention"] == [
        ["a fox , ", 1.0],
        ["fur", 1.2],
        ["", 1.0],
        ["BREAK", -1],
        ["snow", 1.0],
    ]
    assert out["loras"] == [{"name": "Ghibli", "weight": 0.7, "unet_weight": 0.7}]
    assert out["embeddings"] == [] and out["negative_embeddings"] == ["EasyNegative"]
    assert out["flags"] == {"width": 640, "height": 448, "seed": 5}
    assert (out["tokens"], out["chunks"]) == (76, 2)
    assert out["warnings"] == [] and out["errors"] == []


def test_unknown_lora_is_rejected_with_a_suggestion_and_exit_2(settings, capsys):
    code = run(settings, "<lora:ghibly:1> cat", "--loras", "ghibli", "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert "did you mean 'ghibli'?" in out["errors"][0]


def test_injected_lookup_supplies_known_names(settings, capsys):
    def lookup(_settings):
        return prompt.InstalledNames(loras=frozenset({"ghibli"}))

    assert run(settings, "<lora:ghibli:1> cat", "--json", lookup=lookup) == 0


def test_table_shows_pieces_loras_flags_and_verdict(settings, capsys):
    code = run(settings, "a (cat:1.3) (a BREAK b) --seed 3 --v 6")
    out = capsys.readouterr().out
    assert code == 2
    assert "1.300" in out and '"cat"' in out
    assert "seed=3" in out
    assert "warning    prompt: BREAK inside brackets" in out
    assert "error      unknown flag --v" in out
    assert out.rstrip().endswith("rejected")


def test_batch_prints_one_object_per_prompt_in_order(settings, capsys, tmp_path):
    batch = tmp_path / "prompts.json"
    batch.write_text(json.dumps(["a cat", {"prompt": "a dog --steps 999", "negative": "x"}]))
    code = run(settings, "--batch", str(batch))
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert [item["attention"] for item in out] == [[["a cat", 1.0]], [["a dog", 1.0]]]
    assert out[0]["errors"] == [] and "--steps 999" in out[1]["errors"][0]


@pytest.mark.parametrize("content", ["not json", '{"a": 1}', "[1, 2]", '[{"negative": "x"}]'])
def test_bad_batch_file_is_a_user_error(settings, tmp_path, content):
    batch = tmp_path / "prompts.json"
    batch.write_text(content)
    with pytest.raises(UserError):
        run(settings, "--batch", str(batch))


def test_missing_batch_file_and_missing_prompt_are_user_errors(settings, tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        run(settings, "--batch", str(tmp_path / "absent.json"))
    with pytest.raises(UserError, match="give a prompt"):
        run(settings)


def test_json_lists_every_network_installed_or_not_with_the_closest_names(settings, capsys):
    text = "<lora:Ghibly:0.7> <lora:ghibli:0.5:te=0.2> <hypernet:anime:0.4> <lora:x:lots> a fox"
    code = run(
        settings,
        text,
        "--negative",
        "easynegative",
        "--json",
        "--loras",
        "ghibli,ghibli_v2",
        "--embeddings",
        "EasyNegative",
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["networks"] == [
        {
            "kind": "lora",
            "name": "Ghibly",
            "in": "prompt",
            "tag": "<lora:Ghibly:0.7>",
            "weight": 0.7,
            "unet_weight": 0.7,
            "installed": False,
            "closest": ["ghibli", "ghibli_v2"],
        },
        {
            "kind": "lora",
            "name": "ghibli",
            "in": "prompt",
            "tag": "<lora:ghibli:0.5:te=0.2>",
            "weight": 0.2,  # as A1111: a named te= wins, and the UNet takes the te weight
            "unet_weight": 0.2,
            "installed": True,
            "closest": [],
        },
        {
            "kind": "hypernet",
            "name": "anime",
            "in": "prompt",
            "tag": "<hypernet:anime:0.4>",
            "strength": 0.4,
            "installed": False,
            "closest": [],
        },
        {
            "kind": "lora",
            "name": "x",
            "in": "prompt",
            "tag": "<lora:x:lots>",
            "weight": None,
            "unet_weight": None,
            "installed": False,
            "closest": [],
        },
        {
            "kind": "embedding",
            "name": "EasyNegative",
            "in": "negative",
            "installed": True,
            "closest": [],
        },
    ]
    assert [ref["name"] for ref in out["loras"]] == ["ghibli"]  # what would be applied


def test_table_shows_unknown_networks_with_the_closest_names(settings, capsys):
    code = run(settings, "<lora:ghibly:1> cat", "--loras", "ghibli")
    out = capsys.readouterr().out
    assert code == 2
    assert "lora       ghibly  not installed; closest: ghibli" in out
