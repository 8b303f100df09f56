"""The composition root: what every start does before the first job."""

from __future__ import annotations

from pathlib import Path

from bot.container import open_services
from bot.settings import load_settings
from tests.bot.library_files import write_lora
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
