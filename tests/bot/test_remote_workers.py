"""`dreamcord worker` processes on the tiny model, a real redis-server, the bot's services.

The bot side runs in this process (`open_services` with QUEUE_URL, the SQLite database and
the delivery a Discord presenter would get); each worker is a `python -m bot worker` process
that loads the real engine, so kill -9 and a Redis restart are what they would be in use.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.container import Services, open_services
from bot.jobs import Origin
from bot.models import build_engine
from bot.settings import load_settings
from bot.uploads import UPLOADS_FOLDER, store_init_image
from data.jobs import JobState
from pipeline.backend import ImageTask
from pipeline.errors import UserError
from pipeline.remote.registry import RemoteWorkers
from pipeline.remote.streams import Streams, batches_key
from pipeline.request import GenerationRequest, Mode
from tests.bot.cli_helpers import dreamcord
from tests.bot.test_jobs import RecordingDelivery
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a secret the bot and its workers share"
HEARTBEAT_S = 0.5
LEASE_S = 2.0
TIMEOUT_S = 120.0

pytestmark = pytest.mark.timeout(300)


class Workers:
    """`dreamcord worker` processes by name, stopped (SIGTERM, then kill) at the end."""

    def __init__(self, url: str, folder: Path, files_port: int) -> None:
        self.url = url
        self.folder = folder
        self.files_port = files_port
        """The bot's file server (WORKER_FILES_BIND), which the workers fetch files from."""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "QUEUE_URL": self.url,
            "MODEL": "tiny",
            "DEVICE": "cpu",
            "WORKER_NAME": name,
            "WORKER_HEARTBEAT_S": str(HEARTBEAT_S),
            "WORKER_LEASE_S": str(LEASE_S),
            "DATA_DIR": str(self.folder / name),
            "WORKER_SECRET": SECRET,
            "WORKER_FILES_URL": f"http://127.0.0.1:{self.files_port}",
            "OMP_NUM_THREADS": "1",
        }

    def start(self, name: str) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            cwd=self.folder,
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def files_port() -> int:
    return free_port()


@pytest.fixture
def workers(redis_server: RedisServer, tmp_path: Path, files_port: int) -> Iterator[Workers]:
    started = Workers(redis_server.url, tmp_path, files_port)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
async def bot(
    redis_server: RedisServer, tmp_path: Path, files_port: int
) -> AsyncIterator[tuple[Services, RecordingDelivery]]:
    settings = load_settings(
        None,
        data_dir=tmp_path / "bot",
        model="tiny",
        queue_url=redis_server.url,
        worker_secret=SECRET,
        worker_files_bind=f"127.0.0.1:{files_port}",
        worker_heartbeat_s=HEARTBEAT_S,
        worker_lease_s=LEASE_S,
        max_queued_per_user=10,
        max_running_per_user=10,
    )
    delivery = RecordingDelivery()
    services = await open_services(settings, delivery)
    try:
        yield services, delivery
    finally:
        await services.close()


def registry(services: Services) -> RemoteWorkers:
    fleet = services.app.jobs.worker
    assert isinstance(fleet, RemoteWorkers)
    return fleet


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def joined(services: Services, *names: str) -> None:
    await eventually(
        lambda: {beat.name for beat in registry(services).workers()} >= set(names),
        f"workers {names} did not join",
    )


def request(steps: int, count: int = 1) -> GenerationRequest:
    return GenerationRequest("a fox", width=64, height=64, steps=steps, count=count, seed=3)


async def test_jobs_run_on_two_workers_and_each_is_delivered_once(
    bot: tuple[Services, RecordingDelivery], workers: Workers
) -> None:
    services, delivery = bot
    workers.start("w1")
    workers.start("w2")
    await joined(services, "w1", "w2")
    # Different step counts: four batches, so both idle workers take some.
    tickets = [
        await services.app.jobs.submit(request(steps), Origin(user_id=user))
        for user, steps in enumerate((2, 3, 4, 5), start=1)
    ]
    finished = [await services.app.jobs.wait(ticket.job_id) for ticket in tickets]
    assert [job.state for job in finished] == [JobState.DONE] * 4
    assert sorted(job_id for job_id, _ in delivery.delivered) == sorted(t.job_id for t in tickets)
    for ticket in tickets:
        generation = await services.repos.generations.for_job(ticket.job_id)
        assert generation is not None and len(generation.images) == 1
        assert "Steps: " in generation.images[0].parameters
    await eventually(
        lambda: all(beat.images_per_s > 0 for beat in registry(services).workers()),
        "both workers should have run a batch",
    )


async def test_kill_9_of_a_worker_mid_batch_finishes_elsewhere_delivered_once(
    bot: tuple[Services, RecordingDelivery], workers: Workers, redis_server: RedisServer
) -> None:
    services, delivery = bot
    workers.start("w1")
    workers.start("w2")
    await joined(services, "w1", "w2")
    ticket = await services.app.jobs.submit(request(steps=60), Origin(user_id=1))
    await eventually(lambda: bool(delivery.steps), "the batch made no step")

    def busy() -> list[str]:
        return [beat.name for beat in registry(services).workers() if beat.state == "busy"]

    await eventually(lambda: len(busy()) == 1, "no worker says it is busy")
    victim = busy()[0]
    workers.processes[victim].kill()
    job = await services.app.jobs.wait(ticket.job_id)
    assert job.state is JobState.DONE
    assert [job_id for job_id, _ in delivery.delivered] == [ticket.job_id]
    generation = await services.repos.generations.for_job(ticket.job_id)
    assert generation is not None and len(generation.images) == 1
    survivor = ({"w1", "w2"} - {victim}).pop()
    await eventually(
        lambda: (
            [(beat.name, beat.images_per_s > 0) for beat in registry(services).workers()]
            == [(survivor, True)]
        ),
        "the survivor should have run the batch and the victim be gone",
    )
    streams = await Streams.connect(redis_server.url)
    try:
        pending = await streams.client.xpending(batches_key(victim), "workers")
        assert pending["pending"] == 0  # the dead worker's batch was taken back
    finally:
        await streams.close()


async def test_a_redis_restart_loses_nothing_sqlite_knew_of(
    bot: tuple[Services, RecordingDelivery], workers: Workers, redis_server: RedisServer
) -> None:
    services, delivery = bot
    workers.start("w1")
    await joined(services, "w1")
    running = await services.app.jobs.submit(request(steps=10), Origin(user_id=1))
    await eventually(lambda: bool(delivery.steps), "the batch made no step")
    await asyncio.to_thread(redis_server.restart, 1.0)  # every stream, group and key is gone
    queued = await services.app.jobs.submit(request(steps=2), Origin(user_id=2))
    for ticket in (running, queued):
        job = await services.app.jobs.wait(ticket.job_id)
        assert job.state is JobState.DONE, ticket
    assert sorted(job_id for job_id, _ in delivery.delivered) == sorted(
        [running.job_id, queued.job_id]
    )
    assert "Redis is unreachable" in workers.log("w1")


async def test_a_job_cancelled_while_a_worker_runs_it_stops_there(
    bot: tuple[Services, RecordingDelivery], workers: Workers
) -> None:
    services, delivery = bot
    workers.start("w1")
    await joined(services, "w1")
    ticket = await services.app.jobs.submit(request(steps=40), Origin(user_id=1))
    await eventually(lambda: bool(delivery.steps), "the batch made no step")
    assert await services.app.jobs.cancel(ticket.job_id, user_id=1) == "stopping it now"
    await eventually(
        lambda: [beat.state for beat in registry(services).workers()] == ["idle"],
        "the worker did not stop the cancelled batch",
    )
    assert max(step for _, step in delivery.steps) < 40
    after = await services.app.jobs.submit(request(steps=2), Origin(user_id=1))
    assert (await services.app.jobs.wait(after.job_id)).state is JobState.DONE


async def test_a_worker_with_its_own_data_dir_reads_the_bots_picture(
    bot: tuple[Services, RecordingDelivery], workers: Workers, tmp_path: Path
) -> None:
    """An img2img job's init image is a path under the bot's DATA_DIR, which the worker has
    not: it fetches the picture and makes the image the bot's own engine makes from it."""
    services, _ = bot
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((64, 64)).save(buffer, format="PNG")
    stored = await asyncio.to_thread(
        store_init_image, buffer.getvalue(), tmp_path / "bot" / UPLOADS_FOLDER, 64 * 64
    )
    img2img = replace(
        request(steps=4), mode=Mode.IMG2IMG, init_image=str(stored.path), strength=0.6
    )
    workers.start("w1")
    await joined(services, "w1")
    ticket = await services.app.jobs.submit(img2img, Origin(user_id=1))
    job = await services.app.jobs.wait(ticket.job_id)
    assert job.state is JobState.DONE, job.error
    sha = hashlib.sha256(stored.path.read_bytes()).hexdigest()
    copy = tmp_path / "w1" / "worker-files" / "pictures" / sha
    assert copy.read_bytes() == stored.path.read_bytes()
    generation = await services.repos.generations.for_job(ticket.job_id)
    assert generation is not None
    remote = Image.open(services.images.path_of(generation.images[0].path)).convert("RGB")
    settings = load_settings(None, data_dir=tmp_path / "local", model="tiny", device="cpu")
    engine = await asyncio.to_thread(build_engine, settings)
    local = (
        await asyncio.to_thread(
            engine.run, [ImageTask("local", 0, img2img)], lambda *a: None, lambda: False
        )
    )[0]
    difference = np.abs(np.asarray(remote, float) - np.asarray(local.image, float))
    assert difference.mean() < 1.0  # the same picture, seed and engine (threads may differ)


def test_generate_with_queue_url_runs_on_a_worker(
    workers: Workers, redis_server: RedisServer, tmp_path: Path
) -> None:
    workers.start("w1")
    env = {
        **workers.env("cli"),
        "DATA_DIR": str(tmp_path / "cli"),
        "WORKER_FILES_BIND": f"127.0.0.1:{workers.files_port}",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "generate",
            "a fox",
            "--size",
            "64x64",
            "--steps",
            "2",
            "--seed",
            "5",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
    assert "w1" in workers.log("w1")


def test_redis_unreachable_at_start_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("QUEUE_URL", url)
    outcome = dreamcord(capsys, "worker")
    assert outcome.code == 2
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith("dreamcord: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "Connect" in lines[0] and "hunter2" not in lines[0]


async def test_the_bot_refuses_to_start_without_its_redis(tmp_path: Path) -> None:
    settings = load_settings(
        None, data_dir=tmp_path / "bot", queue_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    with pytest.raises(UserError, match=r"cannot reach Redis at redis://127\.0\.0\.1:"):
        await open_services(settings, RecordingDelivery())
