"""Files on workers end to end: a `dreamcord worker` process fetches a LoRA from the bot.

The real bot side (open_services with QUEUE_URL: the file server, the registry), a real
redis-server and one worker process on the tiny model. The LoRA is added the way an admin
does, through the drop folder; its expected hash is hashlib's of the file.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from bench.remote import start_workers, stop_workers, wait_for_workers
from bench.throughput import Plan
from bot.container import open_services
from bot.jobs import Origin
from bot.settings import load_settings
from pipeline.queue import JobState
from pipeline.request import GenerationRequest, LoraRef
from tests.bot.library_files import write_lora
from tests.bot.test_jobs import RecordingDelivery
from tests.bot.test_metrics import free_port
from tests.redis_server import RedisServer

SECRET = "bench-secret"  # the one bench.remote gives its workers


async def test_a_worker_process_fetches_a_lora_once_and_makes_the_image_with_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    drop = tmp_path / "bot" / "loras" / "incoming"
    drop.mkdir(parents=True)
    lora = write_lora(drop / "fox.safetensors")  # named `test-subject` by its metadata
    added = lora.read_bytes()  # the scan moves the file into the library
    sha = hashlib.sha256(added).hexdigest()
    port = free_port()
    settings = load_settings(
        None,
        data_dir=tmp_path / "bot",
        model="tiny",
        queue_url=redis_server.url,
        worker_secret=SECRET,
        worker_files_bind=f"127.0.0.1:{port}",
        worker_heartbeat_s=0.5,
    )
    services = await open_services(settings, RecordingDelivery())
    plan = Plan("tiny", jobs=2, users=1, width=64, height=64, steps=2, max_batch=2)
    workers = start_workers(1, plan, redis_server.url, f"http://127.0.0.1:{port}", tmp_path)
    try:
        await wait_for_workers(services, 1, workers)
        request = GenerationRequest(
            "a fox", width=64, height=64, steps=2, loras=(LoraRef("test-subject", 0.8, 0.8),)
        )
        tickets = [await services.app.jobs.submit(request, Origin(user_id=user)) for user in (1, 2)]
        finished = [await services.app.jobs.wait(ticket.job_id) for ticket in tickets]
        assert [job.state for job in finished] == [JobState.DONE, JobState.DONE], finished
        generation = await services.repos.generations.for_job(tickets[0].job_id)
        assert generation is not None
        images = await services.repos.generations.images_of(generation.id)
    finally:
        await asyncio.to_thread(stop_workers, workers)
        await services.close()
    cached = tmp_path / "worker-0" / "worker-files" / "loras" / f"{sha}.safetensors"
    assert cached.read_bytes() == added
    assert 'Lora hashes: "test-subject: ' in images[0].parameters
