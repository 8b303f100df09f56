"""Prometheus metrics: what the service counts, served as text on the configured port."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from bot.container import open_services
from bot.jobs import Origin
from bot.settings import load_settings
from pipeline.request import GenerationRequest
from tests.bot.test_jobs import RecordingDelivery
from tests.pipeline.fakes import FakeBackend


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_metrics_count_jobs_images_and_oom_retries(tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(None, data_dir=tmp_path / "data", metrics_port=port)
    backend = FakeBackend(oom_above=1)
    services = await open_services(settings, RecordingDelivery(), backend=backend)
    try:
        request = GenerationRequest("a fox", width=64, height=64, steps=2, seed=1, count=2)
        ticket = await services.app.jobs.submit(request, Origin(user_id=1))
        await services.app.jobs.wait(ticket.job_id)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
    finally:
        await services.close()
    lines = set(text.splitlines())
    assert 'dreamcord_jobs_total{state="done"} 1' in lines
    assert "dreamcord_images_total 2" in lines
    assert "dreamcord_oom_retries_total 1" in lines
    assert "dreamcord_queue_depth 0" in lines
    assert "# TYPE dreamcord_images_total counter" in lines
    assert "dreamcord_worker_up 1" in lines
    assert "dreamcord_worker_stuck 0" in lines
    assert "dreamcord_worker_seconds_since_progress 0" in lines
    assert "dreamcord_worker_restarts_total 0" in lines
