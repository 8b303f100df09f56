"""/queue, /status and /help end to end."""

from __future__ import annotations

import asyncio

import pytest

from bot.cli import main
from bot.heartbeat import heartbeat_path
from bot.settings import Settings
from tests.e2e.conftest import ephemeral_reply, job_id_of, wait_for_job_state
from tests.fakediscord import DiscordHarness

pytestmark = pytest.mark.e2e


async def test_queue_lists_my_jobs_with_positions_and_cancels_one(
    discord: DiscordHarness,
) -> None:
    empty = await discord.slash("queue")
    assert "no jobs" in (await ephemeral_reply(empty)).content

    ids = []
    for prompt, steps in (("a slow owl", 40), ("a second owl", 4), ("a third owl", 5)):
        ix = await discord.slash("imagine", prompt=prompt, count=2, steps=steps)
        status = await ix.wait_for_original(lambda m: "Queued" in m.content or "step" in m.content)
        ids.append(job_id_of(status))
    ix = await discord.slash("queue")
    await ix.wait_for_response()
    assert ix.ack_latency is not None and ix.ack_latency < 3
    listing = await ephemeral_reply(ix)
    assert "a third owl" in listing.content and "in the queue" in listing.content
    assert [b["label"] for b in listing.buttons()] == ["Cancel 1", "Cancel 2", "Cancel 3"]
    lines = listing.content.splitlines()
    assert "a third owl" in lines[-1], "listed in the order they run"

    cancel = await discord.click(listing, "Cancel 3")
    assert "Cancelled" in (await ephemeral_reply(cancel)).content
    await wait_for_job_state(discord.client, ids[2], {"cancelled"})
    others = await discord.slash("queue", user=discord.bob)
    assert "no jobs" in (await ephemeral_reply(others)).content


async def test_status_shows_model_device_queue_and_speed(discord: DiscordHarness) -> None:
    ix = await discord.slash("status")
    embed = (await ephemeral_reply(ix)).embeds[0]
    values = {field["name"]: field["value"] for field in embed["fields"]}
    assert values["Model"] == "tiny"
    assert values["Device"] == "cpu"
    assert values["Queue"] == "0 waiting, 0 running"
    assert "steps/s" in values["Speed"]
    assert values["LoRAs"] == "0"
    assert values["Worker"] == "idle"


async def test_help_explains_the_commands_and_the_prompt_language(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash("help", user=discord.bob)
    text = (await ephemeral_reply(ix)).content
    for expected in ("/imagine", "--ar 3:2", "<lora:", "/settings", "/history", "/policy"):
        assert expected in text
    assert len(text) <= 2000


async def test_the_running_bots_heartbeat_tells_doctor_quick_the_worker_is_fine(
    discord: DiscordHarness,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    beat = heartbeat_path(settings.data_dir)
    for _ in range(500):
        if beat.exists():
            break
        await asyncio.sleep(0.01)
    for name, value in {
        "DATA_DIR": str(settings.data_dir),
        "MODEL": "tiny",
        "DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(name, value)
    await asyncio.to_thread(main, ["doctor", "--quick"])
    assert "OK    worker: idle" in capsys.readouterr().out.splitlines()
