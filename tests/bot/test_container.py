"""The composition root: what every start does before the first job."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from bot.container import open_services
from bot.settings import load_settings
from pipeline.errors import UserError
from tests.bot.library_files import write_crafted_loras, write_lora
from tests.bot.test_jobs import ALICE, REQUEST, RecordingDelivery
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


class WarmingBackend(FakeBackend):
    """A fake backend with a compiled path: each warm-up call "compiles" one bucket slowly."""

    def __init__(self, buckets: int) -> None:
        super().__init__()
        self.cold = buckets
        self.order: list[str] = []

    def warm_up_next(self) -> bool:
        if not self.cold:
            return False
        time.sleep(0.2)
        self.cold -= 1
        self.order.append("bucket")
        return True

    def run(self, tasks, on_step, should_stop):  # type: ignore[no-untyped-def]
        self.order.append("batch")
        return super().run(tasks, on_step, should_stop)


async def test_the_model_warms_up_one_bucket_at_a_time_while_batches_run(tmp_path: Path) -> None:
    settings = load_settings(None, model="tiny", data_dir=tmp_path / "data")
    backend = WarmingBackend(buckets=5)
    services = await open_services(settings, RecordingDelivery(), backend=backend)
    try:
        ticket = await services.app.jobs.submit(REQUEST, ALICE)
        await services.app.jobs.wait(ticket.job_id)
        assert services.warming is not None
        await services.warming
    finally:
        await services.close()
    assert backend.cold == 0
    assert "batch" in backend.order[:-1]  # the job did not wait for the whole warm-up


def test_compile_settings_choose_the_buckets_and_keep_kernels_under_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.models import compiled_models
    from pipeline.memory import MemoryModel

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    settings = load_settings(None, model="tiny", data_dir=tmp_path, compile="auto")
    assert compiled_models(settings, "cpu", MemoryModel()) is None  # auto: CUDA only
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    compiled = compiled_models(settings, "cuda", MemoryModel())
    assert compiled is not None and compiled.mode == "auto"
    assert compiled.sizes == ((512, 512),) and compiled.rows == (2, 4, 8, 16)  # MAX_BATCH=8
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor-cache")
    with pytest.raises(UserError, match="COMPILE"):
        load_settings(None, model="tiny", data_dir=tmp_path, compile="fast")
