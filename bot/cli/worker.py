"""`dreamcord worker`: run batches for a bot on this machine's GPU (docs/scale-out.md).

It needs no Discord token and no database: QUEUE_URL, MODEL, DEVICE and the rest as the bot
reads them. Redis is checked first, so a wrong URL is one line before any model loads. SIGTERM
or Ctrl-C gives the running batch back to the bot (it runs elsewhere) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bot.container import memory_budget
from bot.file_cache import worker_files
from bot.models import build_engine, memory_model
from bot.settings import Settings
from bot.worker_files import CONTROLNET, EMBEDDING, HYPERNETWORK, LORA
from pipeline.errors import UserError
from pipeline.memory import Capacity
from pipeline.remote.consumer import BatchConsumer
from pipeline.remote.streams import Streams, shown_url

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run batches for the bot through Redis (needs QUEUE_URL, no Discord token)",
        description="Serve the batches the bot sizes for this worker (WORKER_NAME) until stopped.",
    )
    parser.set_defaults(handler=worker)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.queue_url is None:
        raise UserError(
            "QUEUE_URL is not set: point it at the Redis server the bot uses "
            "(redis://host:6379/0), see docs/scale-out.md"
        )
    asyncio.run(serve(settings, settings.queue_url.get_secret_value()))
    return 0


async def serve(settings: Settings, url: str) -> None:
    """Connect, load the engine, calibrate on CUDA, then serve until a stop signal."""
    files = worker_files(settings)
    streams = await Streams.connect(url)
    try:
        libraries = (files.sources[LORA], files.sources[EMBEDDING], files.sources[HYPERNETWORK])
        engine = await asyncio.to_thread(
            build_engine, settings, None, libraries, files.sources[CONTROLNET], files.upscalers
        )
        on_cuda = engine.device == "cuda"
        budget = memory_budget(settings, on_cuda)
        capacity = Capacity(memory_model(settings), budget)
        consumer = BatchConsumer(
            streams,
            engine,
            settings.worker_name,
            memory=lambda: capacity.model,
            budget=budget,
            heartbeat_s=settings.worker_heartbeat_s,
            lease_s=settings.worker_lease_s,
            cuda_device=_cuda_device_name() if on_cuda else None,
            prepare=files.prepare_batch,
        )
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, consumer.stop)
        # Loaded before the first heartbeat, so no batch waits for the model to load.
        await consumer.call(lambda: engine.models.get(engine.default_model))
        measure = engine.measure_peak
        if on_cuda and measure is not None:
            fitted = await consumer.call(lambda: capacity.calibrate(measure))
            log.info("memory model calibrated: %s", fitted)
        log.info("worker %s serving %s on %s", settings.worker_name, shown_url(url), engine.device)
        await consumer.run()
    finally:
        await streams.close()
    log.info("worker %s stopped", settings.worker_name)


def _cuda_device_name() -> str:
    import torch

    return str(torch.cuda.get_device_name())
