"""/queue lines and buttons, and the /status embed."""

from __future__ import annotations

import discord

from bot.jobs import QueuedJob, ServiceStatus
from cogs.info import HELP, MAX_LISTED, queue_lines, queue_view, status_embed


def job(n: int, running: bool = False) -> QueuedJob:
    return QueuedJob(
        job_id=f"{n:032x}",
        prompt=f"prompt *{n}*",
        running=running,
        position=None if running else n,
        eta_s=12.0,
        images=1 if n == 1 else 4,
    )


def test_queue_lines_say_where_each_job_is() -> None:
    lines = queue_lines([job(0, running=True), job(1), job(2)])
    assert lines[0] == "**1.** prompt \\*0\\* (4 images) - 🎨 running, ready in about 12 s"
    assert lines[1].endswith("(1 image) - ⏳ #1 in the queue, ready in about 12 s")


def test_queue_view_has_one_cancel_per_listed_job() -> None:
    jobs = [job(n) for n in range(MAX_LISTED + 3)]
    buttons = [b.item for b in queue_view(jobs).children]
    assert len(buttons) == MAX_LISTED
    assert buttons[0].custom_id == f"dc:c:{0:032x}" and buttons[0].label == "Cancel 1"
    assert queue_lines(jobs)[-1] == "…and 3 more"


def test_status_embed_shows_memory_only_when_known() -> None:
    status = ServiceStatus("sd15", "cuda", 3 * 1024**3, 24 * 1024**3, 2, 1, 512 * 512 * 10.0, 3)
    fields = {f["name"]: f["value"] for f in status_embed(status).to_dict()["fields"]}
    assert fields["GPU memory"] == "3.0 / 24.0 GiB"
    assert fields["Speed"] == "10.00 steps/s at 512x512"
    assert fields["Queue"] == "2 waiting, 1 running"
    cpu = ServiceStatus("tiny", "cpu", None, None, 0, 0, 1000.0, 0)
    assert "GPU memory" not in {f["name"] for f in status_embed(cpu).to_dict()["fields"]}


def test_status_embed_shows_the_worker_and_turns_red_when_it_is_down() -> None:
    fine = ServiceStatus("tiny", "cpu", None, None, 0, 0, 1000.0, 0, "idle", True)
    embed = status_embed(fine).to_dict()
    assert {f["name"]: f["value"] for f in embed["fields"]}["Worker"] == "idle"
    down = ServiceStatus("tiny", "cpu", None, None, 0, 0, 1000.0, 0, "stopped: restart", False)
    embed = status_embed(down).to_dict()
    assert {f["name"]: f["value"] for f in embed["fields"]}["Worker"] == "stopped: restart"
    assert embed["color"] == discord.Colour.red().value


def test_help_fits_one_message() -> None:
    assert len(HELP) <= 2000
