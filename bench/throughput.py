"""Throughput through the real path (queue, planner, worker, backend): batched vs one by one.

Single-image jobs from several simulated users all arrive at once; the same jobs run twice,
once with batching and once with the batch size forced to 1, while a ticker coroutine measures
how late the event loop wakes it (the loop must stay responsive while the model runs). Then a
lone request's latency through an idle worker, and one full batch on the engine itself: its
seconds, its peak device memory and the SD1.5 compute it achieved (`sd15_tflop`).

`compile` ("auto" or "max") runs the compiled path on any device, the CPU included, with every
bucket warmed before the clock starts (the warm-up is reported on its own).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pipeline.backend import Backend, ImageResult, ImageTask
from pipeline.memory import GIB, Capacity, MemoryModel, cuda_budget, fixed_budget
from pipeline.queue import Job, JobQueue
from pipeline.request import GenerationRequest
from pipeline.worker import Worker, WorkerHooks

if TYPE_CHECKING:
    from pipeline.engine import Engine

TICK_S = 0.05
SD15_TFLOP_512_25 = 43.0
"""TFLOP of one SD1.5 image at 512x512, 25 steps with CFG (two UNet rows a step), UNet,
text encoder and VAE decode together: the issue's figure, from the published per-image cost."""
SMALL_MODELS = ("tiny", "tiny-inpainting")
"""Miniatures whose compute is nothing like SD1.5's: no TFLOP/s for them."""


def sd15_tflop(width: int, height: int, steps: int) -> float:
    """TFLOP of one SD1.5 image with CFG: 43 at 512x512 and 25 steps, scaled linearly by pixels
    and by steps.

    Linear, because the convolutions and projections that dominate at 512x512 grow with the
    latent's pixels, and every step costs the same; self-attention grows with the square of the
    pixels, so above 512x512 this is a lower bound on the work (and the TFLOP/s), below an upper.
    """
    return SD15_TFLOP_512_25 * (width * height) / (512 * 512) * steps / 25


@dataclass(frozen=True)
class Plan:
    model: str
    jobs: int
    users: int
    width: int
    height: int
    steps: int
    max_batch: int
    compile: str = "off"
    """off, auto or max: the compiled path (pipeline/compiled.py), forced on on any device."""


@dataclass(frozen=True)
class Run:
    images_per_s: float
    lag_ms: list[float]
    wait_s_by_user: dict[str, float]


def build_backend(
    model: str, compile_mode: str = "off", max_batch: int = 4, size: tuple[int, int] = (512, 512)
) -> tuple[Engine, Capacity]:
    """The engine for `model` (a MODEL spec such as `tiny`) and what fits on its device.

    The one place that knows how a backend is made; point it elsewhere to bench another one.
    `compile_mode` other than off compiles the UNet for the batches the bench runs: one image
    and `max_batch` images, at `size`.
    """
    import torch

    from pipeline.compiled import CompiledModels
    from pipeline.engine import Engine
    from pipeline.models import ModelManager, choose_placement, resolve_model

    source = resolve_model(model)
    memory = MemoryModel()
    compiled = None
    if compile_mode != "off":
        rows = sorted({2, 2 * max_batch})
        compiled = CompiledModels(compile_mode, [size], rows, memory.decode_batch)
    models = ModelManager({source.name: source}, source.name, choose_placement())
    engine = Engine(models, memory=memory, compiled=compiled)
    on_cuda = torch.cuda.is_available()
    budget = cuda_budget(reserve_bytes=GIB) if on_cuda else fixed_budget(64 * GIB)
    return engine, Capacity(memory, budget)


def warm_up(engine: Engine) -> float:
    """Compile every bucket (nothing without `compile`); the seconds it took."""
    started = time.perf_counter()
    while engine.warm_up_next():
        pass
    return time.perf_counter() - started


class _Recorder(WorkerHooks):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.finished = 0
        self.done_at: list[float] = []
        self.waits: dict[str, list[float]] = defaultdict(list)
        self.all_done = asyncio.Event()

    def on_job_started(self, job: Job) -> None:
        assert job.started_at is not None
        self.waits[job.user_id].append(job.started_at - job.created_at)

    async def on_job_done(self, job: Job, results: list[ImageResult]) -> None:
        self.done_at.append(time.perf_counter())
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


def _request(plan: Plan) -> GenerationRequest:
    return GenerationRequest(
        "a lighthouse on a cliff at dusk", width=plan.width, height=plan.height, steps=plan.steps
    )


async def measure(backend: Backend, capacity: Capacity, plan: Plan, max_batch: int) -> Run:
    """Run `plan.jobs` single-image jobs through a fresh queue and worker."""
    request = _request(plan)
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


async def lone_latency(backend: Backend, capacity: Capacity, plan: Plan) -> float:
    """Seconds from submitting one image to an idle, warm worker until its job is done."""
    request = _request(plan)
    queue = JobQueue(max_queued_per_user=1, max_running_per_user=1)
    recorder = _Recorder(1)
    worker = Worker(queue, backend, capacity, recorder, max_batch=1)
    worker.start()
    warm = [ImageTask("warm-up", 0, request)]
    await worker.call(lambda: backend.run(warm, lambda *_: None, lambda: False))
    started = time.perf_counter()
    queue.submit("lone", "user0", replace(request, seed=1))
    await recorder.all_done.wait()
    await worker.stop()
    return recorder.done_at[0] - started


def full_batch(engine: Engine, plan: Plan, repeats: int = 2) -> tuple[float, int]:
    """Seconds of one `max_batch` batch on the engine alone (mean of `repeats`, after a warm
    one) and its peak device bytes (0 on the CPU)."""
    request = _request(plan)
    tasks = [ImageTask("batch", i, replace(request, seed=i)) for i in range(plan.max_batch)]
    engine.run(tasks, lambda *_: None, lambda: False)
    started = time.perf_counter()
    for _ in range(repeats):
        results = engine.run(tasks, lambda *_: None, lambda: False)
    seconds = (time.perf_counter() - started) / repeats
    return seconds, int(results[0].timings.get("peak_memory_mb", 0)) * 2**20


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def bench_throughput(plan: Plan) -> dict[str, Any]:
    """Batched and one-by-one runs of the same jobs, in the `--json` report's shape."""
    import resource

    engine, capacity = await asyncio.to_thread(
        build_backend, plan.model, plan.compile, plan.max_batch, (plan.width, plan.height)
    )
    compile_s = await asyncio.to_thread(warm_up, engine)
    batched = await measure(engine, capacity, plan, plan.max_batch)
    sequential = await measure(engine, capacity, plan, 1)
    lone_s = await lone_latency(engine, capacity, plan)
    batch_s, peak_bytes = await asyncio.to_thread(full_batch, engine, plan)
    lags = batched.lag_ms + sequential.lag_ms
    tflop = None if plan.model in SMALL_MODELS else sd15_tflop(plan.width, plan.height, plan.steps)
    return {
        "batched": {"images_per_s": round(batched.images_per_s, 3)},
        "sequential": {"images_per_s": round(sequential.images_per_s, 3)},
        "speedup": round(batched.images_per_s / sequential.images_per_s, 3),
        "s_per_batch": round(batch_s, 3),
        "lone_request_s": round(lone_s, 3),
        "peak_memory_mb": round(peak_bytes / 2**20) if peak_bytes else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "tflop_per_s": None if tflop is None else round(tflop * batched.images_per_s, 1),
        "compile_s": round(compile_s, 1),
        "loop_lag_ms": {
            "p50": round(percentile(lags, 0.5), 2),
            "p99": round(percentile(lags, 0.99), 2),
            "max": round(max(lags), 2),
        },
        "wait_s_by_user": {user: round(s, 3) for user, s in batched.wait_s_by_user.items()},
        "settings": {
            "model": plan.model,
            "device": _device_name(engine),
            "compile": plan.compile,
            "jobs": plan.jobs,
            "users": plan.users,
            "size": f"{plan.width}x{plan.height}",
            "steps": plan.steps,
            "max_batch": plan.max_batch,
        },
    }


def _device_name(engine: Engine) -> str:
    import torch

    if engine.device == "cuda":
        return torch.cuda.get_device_name()
    return f"{engine.device} ({torch.get_num_threads()} threads)"
