"""`dreamcord controlnet ...` as a user runs it: the library verbs, the type, and the audit log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.bot.cli_helpers import dreamcord
from tests.bot.library_files import write_lora
from tests.control_files import tiny_controlnet, write_diffusers_layout, write_original_layout


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_controlnet(seed=5)


def test_add_list_info_type_rename_disable_remove(capsys, tiny, tmp_path) -> None:
    source = write_original_layout(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
    added = dreamcord(capsys, "controlnet", "add", str(source))
    assert added.code == 0, added.err
    assert added.out.startswith("added ControlNet 'control_v11p_sd15_canny' (4.0 MiB)")
    listing = dreamcord(capsys, "controlnet", "list").out.splitlines()
    assert listing[0].split() == ["NAME", "TYPE", "LAYOUT", "SIZE", "ENABLED"]
    assert listing[1].split() == [
        "control_v11p_sd15_canny",
        "canny",
        "original",
        "4.0",
        "MiB",
        "yes",
    ]
    info = dreamcord(capsys, "controlnet", "info", "CONTROL_V11P_SD15_CANNY").out
    assert "type      canny" in info and "layout    original" in info and "base      sd1" in info
    assert "hint      3 channels" in info
    typed = dreamcord(capsys, "controlnet", "set-type", "control_v11p_sd15_canny", "depth")
    assert typed.out == "ControlNet 'control_v11p_sd15_canny' is now of type depth\n"
    assert dreamcord(capsys, "controlnet", "rename", "control_v11p_sd15_canny", "edges").code == 0
    assert (
        dreamcord(capsys, "controlnet", "disable", "edges").out == "disabled ControlNet 'edges'\n"
    )
    assert "type      depth" in dreamcord(capsys, "controlnet", "info", "edges").out
    assert dreamcord(capsys, "controlnet", "remove", "edges").code == 0
    assert dreamcord(capsys, "controlnet", "list").out == "no ControlNets\n"
    assert list((tmp_path / "data" / "controlnets").glob("*.safetensors")) == []


def test_add_takes_a_name_and_a_type(capsys, tiny, tmp_path) -> None:
    source = write_diffusers_layout(tmp_path / "diffusion_pytorch_model.safetensors", tiny)
    added = dreamcord(
        capsys, "controlnet", "add", str(source), "--name", "pose", "--type", "openpose"
    )
    assert added.code == 0, added.err
    assert dreamcord(capsys, "controlnet", "list").out.splitlines()[1].split()[:3] == [
        "pose",
        "openpose",
        "diffusers",
    ]


def test_every_change_from_the_cli_is_in_the_audit_log(capsys, tiny, tmp_path) -> None:
    source = write_original_layout(tmp_path / "control_v11p_sd15_scribble.safetensors", tiny)
    assert dreamcord(capsys, "controlnet", "add", str(source), "--name", "sketch").code == 0
    assert dreamcord(capsys, "controlnet", "set-type", "sketch", "lineart").code == 0
    assert dreamcord(capsys, "controlnet", "rename", "sketch", "lines").code == 0
    assert dreamcord(capsys, "controlnet", "remove", "lines").code == 0
    database = sqlite3.connect(tmp_path / "data" / "dreamcord.db")
    rows = database.execute("SELECT action, target, guild_id, user_id FROM audit_log ORDER BY id")
    assert rows.fetchall() == [
        ("controlnet.add", "sketch", None, None),
        ("controlnet.type", "sketch", None, None),
        ("controlnet.rename", "sketch", None, None),
        ("controlnet.remove", "lines", None, None),
    ]
    database.close()


def test_check_reports_the_layout_and_the_guessed_type(capsys, tiny, tmp_path) -> None:
    source = write_original_layout(tmp_path / "control_v11f1e_sd15_tile.safetensors", tiny)
    checked = dreamcord(capsys, "controlnet", "check", str(source), "--json")
    report = json.loads(checked.out)
    assert (checked.code, report["ok"], report["layout"], report["type"]) == (
        0,
        True,
        "original",
        "tile",
    )
    assert (report["base"], report["hint_channels"], report["has_hint"]) == ("sd1", 3, True)
    lora = dreamcord(capsys, "controlnet", "check", str(write_lora(tmp_path / "l.safetensors")))
    assert lora.code == 2 and "refused: it is a LoRA, not a ControlNet" in lora.out


def test_mistakes_are_one_line_and_exit_2(capsys, tiny, tmp_path) -> None:
    controlnet = write_original_layout(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
    cases = [
        (("controlnet", "add", str(tmp_path / "nope.safetensors")), "does not exist"),
        (("controlnet", "remove", "ghost"), "there is no ControlNet named 'ghost'"),
        (
            ("controlnet", "add", str(write_lora(tmp_path / "l.safetensors"))),
            "l.safetensors cannot be added: it is a LoRA, not a ControlNet: add it with `lora add`",
        ),
        (
            ("lora", "add", str(controlnet)),
            "it is a ControlNet, not a LoRA: add it as a ControlNet",
        ),
        (("controlnet", "set-type", "ghost", "pose"), "'pose' is not a ControlNet type: use one"),
        (("controlnet", "add", str(controlnet), "--type", "pose"), "invalid choice: 'pose'"),
    ]
    (tmp_path / "control_v11p_sd15_canny.pth").write_bytes(b"\x80\x04pickle")
    cases.append(
        (("controlnet", "add", str(tmp_path / "control_v11p_sd15_canny.pth")), "only .safetensors")
    )
    for argv, message in cases:
        outcome = dreamcord(capsys, *argv)
        assert outcome.code == 2, (argv, outcome)
        assert message in outcome.err and outcome.err.count("\n") == 1, (argv, outcome.err)
    assert dreamcord(capsys, "controlnet", "list").out == "no ControlNets\n"


def test_help_lists_the_controlnet_verbs(capsys) -> None:
    outcome = dreamcord(capsys, "controlnet", "--help")
    for verb in ("add", "list", "info", "remove", "rename", "set-type", "enable", "scan", "check"):
        assert verb in outcome.out
