"""`dreamcord doctor` all green on the tiny model, with the token checked online."""

from __future__ import annotations

import asyncio
import time
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
    assert [line.split()[0] for line in lines] == ["OK"] * 7 + ["SKIP"] * 4 + ["OK"], lines
    assert "SKIP  image prompts: image prompts are off" in lines[7]
    assert "SKIP  worker: the bot is not running on this DATA_DIR" in lines[8]
    assert "SKIP  redis: QUEUE_URL is unset" in lines[9]
    assert "SKIP  workers: QUEUE_URL is unset" in lines[10]
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
    expected = "OK    library: 1 LoRAs, embeddings, hypernetworks and ControlNets"
    assert expected in capsys.readouterr().out
    for stored in (tmp_path / "data" / "loras").glob("*.safetensors"):
        stored.unlink()
    main(["doctor", "--quick"])
    out = capsys.readouterr().out
    assert "FIX   library: 1 library files are missing or changed (ghibli)" in out


def _checkpoint_header(path: Path, in_channels: int) -> Path:
    """A file with the SD1.5 UNet's conv_in as LDM checkpoints name it; doctor reads only that."""
    import torch
    from safetensors.torch import save_file

    conv_in = torch.zeros(320, in_channels, 3, 3)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": conv_in}, str(path))
    return path


def test_inpainting_checkpoints_are_named_and_cannot_be_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    _checkpoint_header(models / "dreamshaper_8.safetensors", 4)
    _checkpoint_header(models / "sd-v1-5-inpainting.safetensors", 9)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELS_DIR", str(models))
    monkeypatch.setenv("MODEL", str(models / "dreamshaper_8.safetensors"))
    main(["doctor", "--quick"])
    line = next(line for line in capsys.readouterr().out.splitlines() if " models:" in line)
    assert line == (
        "OK    models: 2 configured, default dreamshaper_8 (checkpoint file); inpainting, "
        "for image edits: sd-v1-5-inpainting"
    )

    monkeypatch.setenv("MODEL", str(models / "sd-v1-5-inpainting.safetensors"))
    assert main(["doctor", "--quick"]) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if " models:" in line)
    assert line.startswith(
        "FIX   models: MODEL: sd-v1-5-inpainting is an SD1.5 inpainting checkpoint (9 input "
        "channels); it serves image edits"
    )


def beat(data_dir: Path, age_s: float, ago: dict[str, float], **worker: object) -> None:
    """A heartbeat file as the running bot writes it, `age_s` seconds old; `ago` gives the
    worker's times as seconds before now."""
    from bot.heartbeat import heartbeat_path, write_heartbeat
    from pipeline.health import WorkerHealth

    now = time.time()
    health = {"alive": True, "busy_since": None, "last_step_at": None, "restarts": 0}
    health |= {"last_error": None, "stuck_after_s": 600.0, **worker}
    health |= {name: now - seconds for name, seconds in ago.items()}
    data_dir.mkdir(parents=True, exist_ok=True)
    write_heartbeat(heartbeat_path(data_dir), WorkerHealth(**health), now - age_s)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("age_s", "ago", "worker", "verdict"),
    [
        (5, {}, {}, "OK    worker: idle"),
        (5, {"busy_since": 30, "last_step_at": 2}, {}, "OK    worker: busy for 30 s, last pro"),
        (
            5,
            {},
            {"alive": False, "last_error": "RuntimeError: boom", "restarts": 4},
            "FIX   worker: the image worker is stopped (last error: RuntimeError: boom): "
            "restart the bot",
        ),
        (
            5,
            {"busy_since": 900, "last_step_at": 700},
            {},
            "FIX   worker: the image worker is stuck: no progress for 700 s (limit 600 s)",
        ),
        (600, {}, {}, "FIX   worker: the bot's heartbeat is 600 s old: the bot is not running"),
    ],
)
def test_doctor_quick_judges_the_worker_by_the_running_bots_heartbeat(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    age_s: float,
    ago: dict[str, float],
    worker: dict[str, object],
    verdict: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")
    beat(tmp_path / "data", age_s, ago, **worker)
    main(["doctor", "--quick"])
    line = next(line for line in capsys.readouterr().out.splitlines() if " worker:" in line)
    assert line.startswith(verdict), line


def test_a_heartbeat_file_that_is_not_one_is_a_failure_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heartbeat.json").write_text("{not json")
    main(["doctor", "--quick"])
    out = capsys.readouterr().out
    assert "FIX   worker:" in out and "is not a heartbeat file" in out and "restart the bot" in out
