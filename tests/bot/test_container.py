"""The composition root: what every start does before the first job."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.container import open_services
from bot.settings import load_settings
from tests.bot.library_files import write_crafted_loras, write_lora
from tests.bot.test_jobs import RecordingDelivery
from tests.pipeline.fakes import FakeBackend


async def test_a_lora_dropped_in_the_incoming_folder_is_added_at_start(tmp_path: Path) -> None:
    settings = load_settings(None, model="tiny", data_dir=tmp_path / "data")
    incoming = settings.data_dir / "loras" / "incoming"
    incoming.mkdir(parents=True)
    write_lora(incoming / "dropped.safetensors", output_name=None)
    services = await open_services(settings, RecordingDelivery(), backend=FakeBackend())
    try:
        assert "dropped" in services.app.requests.names.loras
    finally:
        await services.close()
    assert not (incoming / "dropped.safetensors").exists()  # moved into the library


async def test_crafted_files_in_the_drop_folder_are_refused_and_the_bot_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(None, model="tiny", data_dir=tmp_path / "data")
    incoming = settings.data_dir / "loras" / "incoming"
    incoming.mkdir(parents=True)
    crafted = write_crafted_loras(incoming)
    write_lora(incoming / "good.safetensors", output_name=None)
    with caplog.at_level(logging.INFO, logger="bot.container"):
        services = await open_services(settings, RecordingDelivery(), backend=FakeBackend())
    try:
        # Hostile training metadata is only ignored: the file itself is fine.
        assert services.app.requests.names.loras == {"good", "nested-tags"}
    finally:
        await services.close()
    crafted = [path for path in crafted if path.stem != "nested-tags"]
    assert all(path.exists() for path in crafted)  # left in place for the admin to see
    refused = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(r.args[0] for r in refused) == sorted(p.name for p in crafted)
    assert all("\n" not in r.getMessage() and "left in place" in r.getMessage() for r in refused)
