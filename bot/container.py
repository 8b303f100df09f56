"""The composition root: the database, libraries, engine and worker opened once from the
settings, the `App` built over them (`bot.app.build_app`), and all of it closed together."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.app import App, build_app
from bot.file_server import serve_files
from bot.guild import GuildRules
from bot.jobs import Delivery, JobService
from bot.libraries import Libraries, download_rules
from bot.library import (
    ControlNetLibrary,
    EmbeddingLibrary,
    HypernetworkLibrary,
    Library,
    LoraLibrary,
    attention_widths,
    text_width,
)
from bot.metrics import serve_metrics
from bot.models import build_engine, limits_of, memory_model, upscaler_catalog
from bot.policy import Policy
from bot.settings import Settings
from bot.training import StartRun
from bot.uploads import UPLOADS_FOLDER, sweep_uploads
from bot.worker_files import LibraryFiles
from data.db import Database
from data.images import ImageStore
from data.repositories import Repositories
from pipeline.backend import Backend, Warmable
from pipeline.background import BackgroundWork
from pipeline.errors import UserError
from pipeline.hashes import FileHashes
from pipeline.memory import Capacity, cuda_budget, fixed_budget
from pipeline.models import resolve_model
from pipeline.queue import JobQueue
from pipeline.remote.manifest import FileManifest
from pipeline.remote.registry import RemoteWorkers
from pipeline.remote.streams import Streams
from pipeline.training.plan import TrainingPlan
from pipeline.worker import Worker, WorkerHooks, Workers

if TYPE_CHECKING:
    from pipeline.engine import Engine

log = logging.getLogger(__name__)

CUDA_RESERVE_BYTES = 768 * 1024**2
"""Left free on the card for the CUDA context, fragmentation and other processes."""


def database_path(settings: Settings) -> Path:
    return settings.data_dir / "dreamcord.db"


@dataclass
class Services:
    """What was opened for the bot or the CLI: the `App`, and the parts it is built over
    (tests reach the repositories here); `close` releases it all in order."""

    settings: Settings
    db: Database
    repos: Repositories
    images: ImageStore
    app: App

    metrics_server: web.AppRunner | None = None
    warming: asyncio.Task[None] | None = None
    """The compiled path's warm-up (COMPILE), running beside the eager path."""
    file_server: web.AppRunner | None = None
    """Library files for remote workers, while QUEUE_URL is set."""

    async def close(self) -> None:
        if self.warming is not None:
            self.warming.cancel()
            await asyncio.gather(self.warming, return_exceptions=True)
        await self.app.jobs.stop()  # first: no training event comes after it
        await self.app.training.stop()
        if self.metrics_server is not None:
            await self.metrics_server.cleanup()
        if self.file_server is not None:
            await self.file_server.cleanup()
        await self.db.close()


async def open_database(settings: Settings) -> tuple[Database, Repositories]:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"DATA_DIR={settings.data_dir} cannot be created ({error.strerror}): "
            "set DATA_DIR to a folder the user running Dreamcord may write"
        ) from None
    db = await Database.open(database_path(settings))
    return db, Repositories.over(db)


def make_libraries(
    settings: Settings, repos: Repositories, model_override: str | None = None
) -> tuple[LoraLibrary, EmbeddingLibrary, HypernetworkLibrary]:
    """The LoRA, embedding and hypernetwork libraries, for the files the model can use."""
    model = model_override or settings.model
    width = text_width(model)
    return (
        LoraLibrary(repos.loras, settings.data_dir, width),
        EmbeddingLibrary(repos.embeddings, settings.data_dir, width),
        HypernetworkLibrary(repos.hypernetworks, settings.data_dir, width, attention_widths(model)),
    )


async def read_controlnets(
    settings: Settings, repos: Repositories, model_override: str | None = None
) -> ControlNetLibrary:
    """The ControlNet library as registered, for the model's cross-attention width."""
    controlnets = ControlNetLibrary(
        repos.controlnets, settings.data_dir, text_width(model_override or settings.model)
    )
    await controlnets.refresh()
    return controlnets


async def open_library_verbs(settings: Settings) -> tuple[Database, Libraries]:
    """The audited libraries alone, for the CLI's library verbs (no engine, no drop scan)."""
    db, repos = await open_database(settings)
    libraries = await read_libraries(settings, repos)
    controlnets = await read_controlnets(settings, repos)
    return db, Libraries(*libraries, controlnets, repos.audit, download_rules(settings))


async def read_libraries(
    settings: Settings, repos: Repositories, model_override: str | None = None
) -> tuple[LoraLibrary, EmbeddingLibrary, HypernetworkLibrary]:
    """The libraries as registered, drop folders untouched (the App's `libraries` scans them)."""
    libraries = make_libraries(settings, repos, model_override)
    library: Library[Any, Any]
    for library in libraries:
        await library.refresh()
    return libraries


async def scan_drop_folders(libraries: Sequence[Library[Any, Any]]) -> None:
    """Add what the drop folders hold, as at every start; refusals are logged, not raised."""
    for library in libraries:
        for outcome in await library.scan():
            level = logging.WARNING if outcome.refused else logging.INFO
            log.log(level, "drop folder: %s: %s", outcome.file, outcome.message)


async def sweep_orphans(images: ImageStore, repos: Repositories, uploads: Path) -> None:
    """Remove image files no row points to (left by a crash between file and row), and
    uploaded pictures no job starts from."""
    removed = await asyncio.to_thread(images.orphan_sweep, await repos.generations.image_paths())
    if removed:
        log.info("removed %d orphaned image files", removed)
    if removed := await sweep_uploads(uploads, repos.jobs):
        log.info("removed %d uploaded pictures no job uses", removed)


async def open_services(
    settings: Settings,
    delivery: Delivery,
    model_override: str | None = None,
    backend: Backend | None = None,
) -> Services:
    """Open the database, build the engine off the event loop, recover jobs, start the worker."""
    db, repos = await open_database(settings)
    try:
        loras, embeddings, hypernetworks = await read_libraries(settings, repos, model_override)
        controlnets = await read_controlnets(settings, repos, model_override)
        await scan_drop_folders((loras, embeddings, hypernetworks, controlnets))
        start_run: StartRun | None = None
        queue = JobQueue(
            max_queued_per_user=settings.max_queued_per_user,
            max_running_per_user=settings.max_running_per_user,
        )
        workers: Callable[[WorkerHooks], Workers]
        hashes = FileHashes()  # the manifests' and the file server's: a picture is hashed once
        if settings.queue_url is not None and backend is None:
            streams = await Streams.connect(settings.queue_url.get_secret_value())
            manifest = FileManifest(
                {
                    "loras": loras,
                    "embeddings": embeddings,
                    "hypernetworks": hypernetworks,
                    "controlnets": controlnets,
                },
                upscaler_catalog(settings),
                hashes,
            )
            workers = functools.partial(remote_workers, settings, queue, streams, manifest)
            backend, on_cuda, capacity = None, False, None
        else:
            if backend is None:
                engine = await asyncio.to_thread(
                    build_engine,
                    settings,
                    model_override,
                    (loras, embeddings, hypernetworks),
                    controlnets,
                )
                backend, start_run = engine, training_on(engine, settings)
            on_cuda = backend.device == "cuda"
            capacity = Capacity(memory_model(settings), memory_budget(settings, on_cuda))
            workers = functools.partial(local_worker, settings, queue, backend, capacity)
        images = ImageStore(settings.data_dir / "images")
        guild = GuildRules(
            repos.settings,
            repos.audit,
            settings.max_pixels,
            settings.max_steps,
            checker_loaded=settings.safety_checker != "off",
            training_steps_limit=settings.training_max_steps,
        )
        jobs = JobService(
            repos,
            images,
            queue,
            workers,
            limits_of(settings),
            delivery,
            Policy(
                guild,
                lora_triggers=loras.triggers,
                dm_policy=settings.dm_policy,
                home_guild=settings.home_guild,
            ),
        )
        await sweep_orphans(images, repos, settings.data_dir / UPLOADS_FOLDER)
        await jobs.start()
        if on_cuda and isinstance(jobs.worker, Worker) and capacity and backend:
            await calibrate(jobs.worker, capacity, backend)
        app = await build_app(
            settings,
            repos,
            images,
            (loras, embeddings, hypernetworks),
            controlnets,
            jobs,
            guild,
            start_run,
        )
        await app.training.recover()
        services = Services(settings, db, repos, images, app)
        if isinstance(backend, Warmable) and isinstance(jobs.worker, Worker):
            services.warming = asyncio.create_task(warm_up(jobs.worker, backend), name="warm-up")
        if settings.metrics_port:
            services.metrics_server = await serve_metrics(
                jobs.metrics, settings.metrics_host, settings.metrics_port
            )
        if settings.queue_url is not None:
            files = LibraryFiles.over(
                loras,
                embeddings,
                hypernetworks,
                controlnets,
                upscaler_catalog(settings),
                repos.jobs.active_pictures,
                hashes,
            )
            services.file_server = await serve_files(files, settings)
    except BaseException:
        await db.close()
        raise
    return services


def memory_budget(settings: Settings, on_cuda: bool) -> Callable[[], int]:
    """What a batch may use: the card's free memory less a reserve, or MEMORY_LIMIT_MB."""
    if on_cuda:
        return cuda_budget(CUDA_RESERVE_BYTES)
    return fixed_budget(settings.memory_limit_mb * 1024**2)


def worker_options(settings: Settings) -> dict[str, Any]:
    """The worker loop's settings, the same for the local loop and each remote one."""
    return {
        "max_batch": settings.max_batch,
        "restart_backoff_s": settings.worker_restart_backoff_s,
        "max_restarts": settings.worker_max_restarts,
        "stuck_after_s": settings.worker_stuck_after_s,
    }


def local_worker(
    settings: Settings, queue: JobQueue, backend: Backend, capacity: Capacity, hooks: WorkerHooks
) -> Worker:
    """The one in-process worker loop (no QUEUE_URL)."""
    return Worker(queue, backend, capacity, hooks, **worker_options(settings))


def remote_workers(
    settings: Settings,
    queue: JobQueue,
    streams: Streams,
    manifest: FileManifest,
    hooks: WorkerHooks,
) -> RemoteWorkers:
    """One worker loop per live `dreamcord worker` (QUEUE_URL set): docs/scale-out.md."""
    return RemoteWorkers(
        streams,
        queue,
        lambda backend, capacity, turn: Worker(
            queue, backend, capacity, hooks, wait_turn=turn, **worker_options(settings)
        ),
        manifest,
        lease_s=settings.worker_lease_s,
        heartbeat_s=settings.worker_heartbeat_s,
        stuck_after_s=settings.worker_stuck_after_s,
        default_model=resolve_model(settings.model).name,
    )


def training_on(engine: Engine, settings: Settings) -> StartRun:
    """Training runs on the engine's own model thread and default model."""

    def start(plan: TrainingPlan, work_dir: Path, export: Path) -> BackgroundWork:
        from pipeline.training_work import start_training

        return start_training(engine, plan, work_dir, export, settings.training_sample_steps)

    return start


async def warm_up(worker: Worker, backend: Warmable) -> None:
    """Compile the model's shape buckets one at a time on the model thread; batches queued
    meanwhile run (eager) between two buckets, so nobody waits for the whole warm-up."""
    started = time.perf_counter()
    try:
        while await worker.call(backend.warm_up_next):
            pass
    except Exception:
        log.exception("compiling the model failed; it keeps running eager")
        return
    log.info("compiled path warm in %.0f s", time.perf_counter() - started)


async def calibrate(worker: Worker, capacity: Capacity, backend: Backend) -> None:
    """Fit the memory model to peaks measured on this card (a few seconds at start-up)."""
    measure = backend.measure_peak
    if measure is None:
        return
    try:
        model = await worker.call(lambda: capacity.calibrate(measure))
    except Exception:
        log.exception("memory calibration failed; keeping the default memory model")
        return
    log.info("memory model calibrated: %s", model)
