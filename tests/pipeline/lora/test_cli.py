"""`dreamcord lora check` reports an inspection and exits 0 for usable, 2 for refused."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from bot.cli import lora
from pipeline.errors import UserError
from tests.pipeline.lora import make_files as mf

TINY = SimpleNamespace(model="tiny")


def _run(argv: list[str], settings=TINY) -> int:
    parser = argparse.ArgumentParser()
    lora.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args, settings)


def test_json_output_for_a_usable_lora(tiny_files, capsys):
    assert _run(["lora", "check", str(tiny_files["lora"]), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True
    assert (document["kind"], document["base"], document["rank"]) == ("lora", "sd1", 4)
    assert document["triggers"][0] == "sks dog"
    assert document["reason"] is None


def test_refused_file_exits_2_with_its_reason(tmp_path, capsys):
    path = mf.write_png(tmp_path / "cat.safetensors")
    assert _run(["lora", "check", str(path), "--json"]) == 2
    assert "PNG" in json.loads(capsys.readouterr().out)["reason"]


def test_human_output_is_a_short_table(full_files, capsys):
    assert _run(["lora", "check", str(full_files["sdxl"])], SimpleNamespace(model="x")) == 2
    out = capsys.readouterr().out
    assert "refused: it was made for SDXL" in out
    assert out.count("\n") == 12


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        _run(["lora", "check", str(tmp_path / "nope.safetensors")])
