"""`dreamcord backup` while jobs are running, and `dreamcord stats`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bot.container import open_services
from bot.jobs import Origin
from bot.settings import load_settings
from pipeline.request import GenerationRequest
from tests.bot.cli_helpers import dreamcord
from tests.bot.test_jobs import RecordingDelivery
from tests.pipeline.fakes import FakeBackend


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


async def test_backup_while_generating_is_a_consistent_copy(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = FakeBackend(step_s=0.01)
    services = await open_services(
        load_settings(None, data_dir=data_dir), RecordingDelivery(), backend=backend
    )
    try:
        request = GenerationRequest("a fox", width=64, height=64, steps=20, seed=1)
        tickets = [await services.app.jobs.submit(request, Origin(user_id=n)) for n in (1, 2)]
        outcome = await asyncio.to_thread(dreamcord, capsys, "backup", str(tmp_path / "b.db"))
        assert outcome.code == 0, outcome.err
        for ticket in tickets:
            await services.app.jobs.wait(ticket.job_id)
    finally:
        await services.close()
    copy = sqlite3.connect(tmp_path / "b.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2


def test_backup_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old.db").write_text("keep me")
    outcome = dreamcord(capsys, "backup", str(tmp_path / "old.db"))
    assert outcome.code == 2
    assert "never overwrites" in outcome.err
    assert (tmp_path / "old.db").read_text() == "keep me"


async def test_stats_counts_what_was_made(data_dir: Path, capsys) -> None:
    services = await open_services(
        load_settings(None, data_dir=data_dir), RecordingDelivery(), backend=FakeBackend()
    )
    try:
        request = GenerationRequest("a fox", width=64, height=64, steps=2, seed=1, count=3)
        ticket = await services.app.jobs.submit(request, Origin(user_id=1))
        await services.app.jobs.wait(ticket.job_id)
    finally:
        await services.close()
    outcome = await asyncio.to_thread(dreamcord, capsys, "stats", "--json")
    report = json.loads(outcome.out)
    assert report["jobs"]["done"] == 1
    assert report["images"] == 3
    assert report["image_bytes"] > 0


@pytest.mark.parametrize("command", [["stats"], ["backup", "b.db"], ["prompt", "a fox"]])
def test_an_unwritable_data_dir_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", "/proc/self/dreamcord-data")  # not even root may create it
    outcome = dreamcord(capsys, *command)
    assert outcome.code == 2
    assert "DATA_DIR=/proc/self/dreamcord-data cannot be created" in outcome.err
    assert "Traceback" not in outcome.err


def test_export_of_an_unknown_generation_says_where_to_find_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = dreamcord(capsys, "export", "999")
    assert outcome.code != 0
    assert "there is no generation 999: see /history for ids" in outcome.err
    assert outcome.out == ""
