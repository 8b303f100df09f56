"""`dreamcord lora ...` and `dreamcord embedding ...`: the library verbs as a user runs them."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.cli import embedding, lora
from bot.settings import load_settings
from pipeline.errors import UserError
from tests.bot.cli_helpers import Outcome
from tests.bot.library_files import write_crafted_loras, write_embedding, write_lora
from tests.pipeline.lora import make_files as mf


@pytest.fixture
def dreamcord(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Run `dreamcord ARGS` with MODEL=tiny and DATA_DIR in tmp, as `bot.cli.main` would."""
    settings = load_settings(None, data_dir=tmp_path / "data", model="tiny")
    parser = argparse.ArgumentParser(prog="dreamcord")
    commands = parser.add_subparsers(required=True)
    lora.register(commands)
    embedding.register(commands)

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        args = parser.parse_args(argv)
        try:
            code = args.handler(args, settings)
        except UserError as error:
            print(f"dreamcord: {error}", file=sys.stderr)
            code = 2
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def test_add_list_info_rename_disable_remove(dreamcord, tmp_path) -> None:
    source = write_lora(tmp_path / "fox.safetensors")
    added = dreamcord("lora", "add", str(source), "--weight", "0.8", "--triggers", "fox, snow")
    assert added.code == 0 and "added LoRA 'test-subject'" in added.out
    listing = dreamcord("lora", "list").out.splitlines()
    assert listing[0].split() == ["NAME", "KIND", "RANK", "WEIGHT", "TRIGGERS", "SIZE", "ENABLED"]
    assert listing[1].split()[:4] == ["test-subject", "lora", "4", "0.8"]
    info = dreamcord("lora", "info", "TEST-SUBJECT").out
    assert "triggers  fox, snow" in info and "from cli" in info
    assert dreamcord("lora", "rename", "test-subject", "fox").code == 0
    assert dreamcord("lora", "disable", "fox").out == "disabled LoRA 'fox'\n"
    assert dreamcord("lora", "list", "fo").out.splitlines()[1].endswith("no")
    assert dreamcord("lora", "remove", "fox").code == 0
    assert dreamcord("lora", "list").out == "no LoRAs\n"
    assert list((tmp_path / "data" / "loras").glob("*.safetensors")) == []


def test_mistakes_are_one_line_and_exit_2(dreamcord, tmp_path) -> None:
    cases = [
        (("lora", "add", str(tmp_path / "nope.safetensors")), "does not exist"),
        (("lora", "remove", "ghost"), "there is no LoRA named 'ghost'"),
        (("lora", "add", "http://civitai.com/api/download/models/1"), "not an https:// link"),
        (("lora", "add", "https://example.com/a.safetensors"), "example.com are not allowed"),
        (("lora", "add", str(write_embedding(tmp_path / "e.safetensors"))), "add it as an emb"),
    ]
    for argv, message in cases:
        outcome = dreamcord(*argv)
        assert outcome.code == 2, argv
        assert message in outcome.err and outcome.err.count("\n") == 1


def test_scan_reports_each_file_and_exits_2_when_some_were_refused(dreamcord, tmp_path) -> None:
    incoming = tmp_path / "data" / "loras" / "incoming"
    incoming.mkdir(parents=True)
    write_lora(incoming / "good.safetensors", output_name=None)
    mf.write_png(incoming / "bad.safetensors")
    first, again = dreamcord("lora", "scan"), dreamcord("lora", "scan")
    bad, good = first.out.splitlines()
    assert bad.startswith("bad.safetensors: left in place: ") and "PNG image" in bad
    assert good == "good.safetensors: added as 'good'"
    assert (first.code, again.code, again.out) == (2, 2, bad + "\n")


def test_embedding_verbs(dreamcord, tmp_path) -> None:
    source = write_embedding(tmp_path / "bad-hands-5.safetensors", count=3)
    assert dreamcord("embedding", "add", str(source)).code == 0
    listing = dreamcord("embedding", "list").out.splitlines()
    assert listing[0].split() == ["NAME", "VECTORS", "SIZE", "ENABLED"]
    assert listing[1].split()[:2] == ["bad-hands-5", "3"]
    assert "vectors   3" in dreamcord("embedding", "info", "bad-hands-5").out
    assert dreamcord("embedding", "check", str(source)).code == 0
    refused = dreamcord("embedding", "rename", "bad-hands-5", "style")
    assert refused.code == 2 and "vocabulary" in refused.err


def test_every_change_from_the_cli_is_in_the_audit_log(dreamcord, tmp_path) -> None:
    source = write_lora(tmp_path / "fox.safetensors")
    assert dreamcord("lora", "add", str(source), "--name", "fox").code == 0
    assert dreamcord("lora", "rename", "fox", "vixen").code == 0
    assert dreamcord("lora", "disable", "vixen").code == 0
    assert dreamcord("lora", "remove", "vixen").code == 0
    database = sqlite3.connect(tmp_path / "data" / "dreamcord.db")
    rows = database.execute("SELECT action, target, guild_id, user_id FROM audit_log ORDER BY id")
    assert rows.fetchall() == [
        ("lora.add", "fox", None, None),
        ("lora.rename", "fox", None, None),
        ("lora.disable", "vixen", None, None),
        ("lora.remove", "vixen", None, None),
    ]
    database.close()


def test_crafted_files_are_refused_in_one_line_naming_what_is_wrong(dreamcord, tmp_path) -> None:
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    for path in write_crafted_loras(crafted):
        outcome = dreamcord("lora", "add", str(path))
        if path.stem == "nested-tags":  # hostile training metadata is only ignored
            assert outcome.code == 0, outcome
            continue
        assert outcome.code == 2, (path.name, outcome)
        assert f"{path.name} cannot be added: " in outcome.err and outcome.err.count("\n") == 1
