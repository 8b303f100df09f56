"""Throughput through the real path (queue, planner, worker, backend): batched vs one by one.

Single-image jobs from several simulated users all arrive at once; the same jobs run twice,
once with batching and once with the batch size forced to 1, while a ticker coroutine measures
how late the event loop wakes it (the loop must stay responsive while the model runs).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from pipeline.backend import Backend, ImageResult, ImageTask
from pipeline.memory import GIB, Capacity, MemoryModel, cuda_budget, fixed_budget
from pipeline.queue import Job, JobQueue
from pipeline.request import GenerationRequest
from pipeline.worker import Worker, WorkerHooks

TICK_S = 0.05


@dataclass(frozen=True)
class Plan:
    model: str
    jobs: int
    users: int
    width: int
    height: int
    steps: int
    max_batch: int


@dataclass(frozen=True)
class Run:
    images_per_s: float
    lag_ms: list[float]
    wait_s_by_user: dict[str, float]


def build_backend(model: str) -> tuple[Backend, Capacity]:
    """The engine for `model` (a MODEL spec such as `tiny`) and what fits on its device.

    The one place that knows how a backend is made; point it elsewhere to bench another one.
    """
    import torch

    from pipeline.engine import Engine
    from pipeline.models import ModelManager, choose_placement, resolve_model

    source = resolve_model(model)
    engine = Engine(ModelManager({source.name: source}, source.name, choose_placement()))
    on_cuda = torch.cuda.is_available()
    budget = cuda_budget(reserve_bytes=GIB) if on_cuda else fixed_budget(64 * GIB)
    return engine, Capacity(MemoryModel(), budget)


class _Recorder(WorkerHooks):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.finished = 0
        self.waits: dict[str, list[float]] = defaultdict(list)
        self.all_done = asyncio.Event()

    def on_job_started(self, job: Job) -> None:
        assert job.started_at is not None
        self.waits[job.user_id].append(job.started_at - job.created_at)

    async def on_job_done(self, job: Job, results: list[ImageResult]) -> None:
        self._count()

    async def on_job_failed(self, job: Job, message: str) -> None:
        self._count()
        raise RuntimeError(f"job {job.job_id} failed: {message}")

    def _count(self) -> None:
        self.finished += 1
        if self.finished == self.expected:
            self.all_done.set()


async def _tick(lags: list[float]) -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append((time.perf_counter() - before - TICK_S) * 1000)


async def measure(backend: Backend, capacity: Capacity, plan: Plan, max_batch: int) -> Run:
    """Run `plan.jobs` single-image jobs through a fresh queue and worker."""
    request = GenerationRequest(
        "a lighthouse on a cliff at dusk",
        width=plan.width,
        height=plan.height,
        steps=plan.steps,
    )
    queue = JobQueue(max_queued_per_user=plan.jobs, max_running_per_user=plan.jobs)
    recorder = _Recorder(plan.jobs)
    worker = Worker(queue, backend, capacity, recorder, max_batch=max_batch)
    worker.start()
    # Warm up at the batch size the run uses: model load, kernels and allocator caches.
    warm = [ImageTask("warm-up", i, request) for i in range(max_batch)]
    await worker.call(lambda: backend.run(warm, lambda *_: None, lambda: False))
    lags: list[float] = []
    ticker = asyncio.create_task(_tick(lags))
    started = time.perf_counter()
    for number in range(plan.jobs):
        job_request = replace(request, seed=number)
        queue.submit(f"job{number}", f"user{number % plan.users}", job_request)
    await recorder.all_done.wait()
    elapsed = time.perf_counter() - started
    ticker.cancel()
    await worker.stop()
    waits = {user: statistics.fmean(values) for user, values in sorted(recorder.waits.items())}
    return Run(plan.jobs / elapsed, lags, waits)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def bench_throughput(plan: Plan) -> dict[str, Any]:
    """Batched and one-by-one runs of the same jobs, in the `--json` report's shape."""
    backend, capacity = await asyncio.to_thread(build_backend, plan.model)
    batched = await measure(backend, capacity, plan, plan.max_batch)
    sequential = await measure(backend, capacity, plan, 1)
    lags = batched.lag_ms + sequential.lag_ms
    return {
        "batched": {"images_per_s": round(batched.images_per_s, 3)},
        "sequential": {"images_per_s": round(sequential.images_per_s, 3)},
        "speedup": round(batched.images_per_s / sequential.images_per_s, 3),
        "loop_lag_ms": {
            "p50": round(percentile(lags, 0.5), 2),
            "p99": round(percentile(lags, 0.99), 2),
            "max": round(max(lags), 2),
        },
        "wait_s_by_user": {user: round(s, 3) for user, s in batched.wait_s_by_user.items()},
        "settings": {
            "model": plan.model,
            "jobs": plan.jobs,
            "users": plan.users,
            "size": f"{plan.width}x{plan.height}",
            "steps": plan.steps,
            "max_batch": plan.max_batch,
        },
    }
