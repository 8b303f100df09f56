"""`dreamcord hypernetwork ...` as a user runs it, and a generation that uses one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.bot.cli_helpers import dreamcord
from tests.bot.library_files import write_lora
from tests.pipeline.lora.hypernet_files import write_hypernetwork


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")


def test_add_list_info_rename_disable_remove(capsys, tmp_path) -> None:
    source = write_hypernetwork(tmp_path / "anime.safetensors", layer_norm=True)
    added = dreamcord(capsys, "hypernetwork", "add", str(source))
    assert added.code == 0 and "added hypernetwork 'anime'" in added.out, added.err
    listing = dreamcord(capsys, "hypernetwork", "list").out.splitlines()
    assert listing[0].split() == ["NAME", "LAYERS", "ACTIVATION", "SIZE", "ENABLED"]
    assert listing[1].startswith("anime  1, 2, 1  relu +norm")
    info = dreamcord(capsys, "hypernetwork", "info", "ANIME").out
    assert "widths    32, 64" in info and "layer norm yes" in info
    assert dreamcord(capsys, "hypernetwork", "rename", "anime", "anime2").code == 0
    disabled = dreamcord(capsys, "hypernetwork", "disable", "anime2")
    assert disabled.out == "disabled hypernetwork 'anime2'\n"
    assert dreamcord(capsys, "hypernetwork", "remove", "anime2").code == 0
    assert dreamcord(capsys, "hypernetwork", "list").out == "no hypernetworks\n"
    assert list((tmp_path / "data" / "hypernetworks").glob("*.safetensors")) == []


def test_check_reports_the_layout(capsys, tmp_path) -> None:
    source = write_hypernetwork(tmp_path / "h.safetensors")
    checked = dreamcord(capsys, "hypernetwork", "check", str(source), "--json")
    report = json.loads(checked.out)
    assert (checked.code, report["kind"], report["ok"]) == (0, "hypernetwork", True)
    assert report["hypernetwork"]["widths"] == [32, 64]


def test_mistakes_are_one_line_and_exit_2(capsys, tmp_path) -> None:
    cases = [
        (("hypernetwork", "add", str(tmp_path / "nope.safetensors")), "does not exist"),
        (("hypernetwork", "remove", "ghost"), "there is no hypernetwork named 'ghost'"),
        (("hypernetwork", "add", str(write_lora(tmp_path / "l.safetensors"))), "not a hyper"),
        (("lora", "add", str(write_hypernetwork(tmp_path / "h.safetensors"))), "hypernetwork add"),
        (("generate", "a <hypernet:nobody:1>", "--steps", "2"), "unknown hypernetwork 'nobody'"),
    ]
    (tmp_path / "real.pt").write_bytes(b"\x80\x04pickle")
    cases.append((("hypernetwork", "add", str(tmp_path / "real.pt")), "only .safetensors"))
    for argv, message in cases:
        outcome = dreamcord(capsys, *argv)
        assert outcome.code == 2, (argv, outcome)
        assert message in outcome.err and outcome.err.count("\n") == 1, outcome.err


def test_generate_uses_the_tag_and_keeps_it_in_the_parameters(capsys, tmp_path) -> None:
    source = write_hypernetwork(tmp_path / "anime.safetensors")
    assert dreamcord(capsys, "hypernetwork", "add", str(source)).code == 0
    args = ("--seed", "7", "--steps", "2", "--size", "64x64", "--json")
    plain = dreamcord(capsys, "generate", "a red fox", *args, "--out", "plain")
    tagged = dreamcord(capsys, "generate", "a red fox <hypernet:anime:1>", *args, "--out", "h")
    assert plain.code == tagged.code == 0, tagged.err
    report = json.loads(tagged.out)
    assert report["params"]["hypernets"] == [{"name": "anime", "strength": 1.0}]
    image = Image.open(report["images"][0]["path"])
    assert image.info["parameters"].startswith("a red fox <hypernet:anime:1>\n")
    assert image.tobytes() != Image.open(json.loads(plain.out)["images"][0]["path"]).tobytes()
