"""Remote workers as operators see them: /status, the metrics and `dreamcord doctor`.

A real redis-server (tests/redis_server.py); the workers are heartbeats published the way
`dreamcord worker` publishes them (`Streams.beat`), so the bot side is the real one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from bot.cli import main
from bot.container import open_services
from bot.settings import load_settings
from cogs.info import status_embed
from pipeline.memory import MemoryModel
from pipeline.remote.messages import Heartbeat
from pipeline.remote.streams import Streams
from tests.bot.test_jobs import RecordingDelivery
from tests.bot.test_metrics import free_port
from tests.pipeline.remote.test_remote import wait_until
from tests.redis_server import RedisServer

GIB = 1024**3


def beat(name: str, state: str = "idle", speed: float = 0.0, age_s: float = 0.0) -> Heartbeat:
    gpu = "NVIDIA L4" if name == "gpu-a" else None
    return Heartbeat(
        name,
        "cuda" if gpu else "cpu",
        gpu,
        MemoryModel(),
        8 * GIB,
        "tiny",
        ("tiny",),
        (),
        state,
        None,
        speed,
        time.time() - age_s,  # type: ignore[arg-type]
    )


async def publish(url: str, *beats: Heartbeat) -> None:
    streams = await Streams.connect(url)
    try:
        for one in beats:
            await streams.beat(one, 30.0)
    finally:
        await streams.close()


async def test_status_and_metrics_list_each_live_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    metrics_port = free_port()
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        model="tiny",
        queue_url=redis_server.url,
        worker_secret="s3cret",
        worker_files_bind=f"127.0.0.1:{free_port()}",
        worker_heartbeat_s=0.2,
        metrics_port=metrics_port,
    )
    services = await open_services(settings, RecordingDelivery())
    try:
        await publish(redis_server.url, beat("gpu-a", "busy", 3.1, age_s=2), beat("cpu-b"))
        jobs = services.app.jobs
        await wait_until(lambda: len(jobs.remote_workers()) == 2)
        status = await jobs.status()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            text = await response.text()
    finally:
        await services.close()
    b, a = status.workers  # by name
    assert (a.name, a.gpu, a.state, a.images_per_s) == ("gpu-a", "NVIDIA L4", "busy", 3.1)
    assert 1.5 < a.heartbeat_age_s < 10
    assert (b.name, b.gpu, b.state) == ("cpu-b", "cpu", "idle")
    field = next(f for f in status_embed(status).fields if f.name == "Remote workers (2)")
    assert field.value is not None
    assert field.value.splitlines()[1].startswith("gpu-a: NVIDIA L4, busy, 3.10 images/s, ")
    lines = set(text.splitlines())
    assert "dreamcord_remote_workers 2" in lines
    assert 'dreamcord_remote_worker_busy{worker="gpu-a"} 1' in lines
    assert 'dreamcord_remote_worker_busy{worker="cpu-b"} 0' in lines
    assert 'dreamcord_remote_worker_images_per_second{worker="gpu-a"} 3.1' in lines
    assert any(
        line.startswith('dreamcord_remote_worker_heartbeat_age_seconds{worker="cpu-b"}')
        for line in lines
    )


async def test_without_a_queue_status_lists_no_workers(tmp_path: Path) -> None:
    from tests.pipeline.fakes import FakeBackend

    settings = load_settings(None, data_dir=tmp_path / "data")
    services = await open_services(settings, RecordingDelivery(), backend=FakeBackend())
    try:
        status = await services.app.jobs.status()
        text = services.app.jobs.metrics.render()
    finally:
        await services.close()
    assert status.workers == ()
    assert not any(f.name.startswith("Remote workers") for f in status_embed(status).fields)
    assert "dreamcord_remote_workers 0" in text.splitlines()


def doctor_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")
    monkeypatch.setenv("QUEUE_URL", url)
    main(["doctor", "--quick"])
    lines = capsys.readouterr().out.splitlines()
    return {line.split(":")[0].split(maxsplit=1)[1]: line for line in lines if ":" in line}


def test_doctor_checks_redis_and_lists_live_workers(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    lines = doctor_lines(monkeypatch, capsys, tmp_path, redis_server.url)
    assert lines["redis"].startswith("OK    redis: Redis ")
    assert lines["redis"].endswith(f" at {redis_server.url} answers")
    assert lines["workers"].startswith("FIX   workers: no worker is running")
    asyncio.run(publish(redis_server.url, beat("gpu-a", "busy", 2.5)))
    lines = doctor_lines(monkeypatch, capsys, tmp_path, redis_server.url)
    assert lines["workers"].startswith(
        "OK    workers: 1 live: gpu-a (NVIDIA L4, busy, 2.50 images/s, seen "
    )


def test_doctor_names_an_unreachable_redis_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    lines = doctor_lines(monkeypatch, capsys, tmp_path, url)
    assert lines["redis"].startswith("FIX   redis: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "hunter2" not in "".join(lines.values())
