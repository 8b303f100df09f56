"""`dreamcord doctor` all green on the tiny model, with the token checked online."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.cli import main
from tests.fakediscord import FakeDiscord

TOKEN = "MTIz.fake.token"


async def test_doctor_is_all_green_on_the_tiny_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    async with FakeDiscord(token=TOKEN) as server:
        for name, value in {
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_BASE": server.api_url,
            "MODEL": "tiny",
            "DATA_DIR": str(tmp_path / "data"),
            "DEVICE": "cpu",
        }.items():
            monkeypatch.setenv(name, value)
        code = await asyncio.to_thread(main, ["doctor"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["OK"] * 7, lines
    assert "token online: valid" in lines[1]
    assert "made a 64px test image" in lines[-1]
    assert code == 0


def test_a_refused_token_is_a_failure_and_offline_is_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("DISCORD_API_BASE", "http://127.0.0.1:9/api/v10")  # nothing listens
    monkeypatch.setenv("MODEL", "tiny")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "SKIP  token online: Discord is not reachable" in out


def test_a_missing_library_file_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.bot.library_files import write_lora

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")
    lora = write_lora(tmp_path / "ghibli.safetensors", output_name=None)
    assert main(["lora", "add", str(lora)]) == 0
    main(["doctor", "--quick"])
    assert "OK    library: 1 LoRAs, embeddings and hypernetworks" in capsys.readouterr().out
    for stored in (tmp_path / "data" / "loras").glob("*.safetensors"):
        stored.unlink()
    main(["doctor", "--quick"])
    out = capsys.readouterr().out
    assert "FIX   library: 1 library files are missing or changed (ghibli)" in out
