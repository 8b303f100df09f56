"""`dreamcord doctor`: one line per check, OK or what to fix.

`--quick` skips the slow and the online checks (model load, token validity): it serves the
container's health check, which also fails on a dead or stuck worker (from the running bot's
heartbeat file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.settings import Settings
from pipeline.errors import UserError

if TYPE_CHECKING:
    from data.registry import ControlNetEntry, EmbeddingEntry, HypernetworkEntry, LoraEntry
    from pipeline.remote.messages import Heartbeat

MIN_FREE_BYTES = 2 * 1024**3
DISCORD_API = "https://discord.com/api/v10"
TOKEN_CHECK_TIMEOUT_S = 10


class Skipped(Exception):
    """The check could not run here (offline, not configured); not a failure."""


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Settings], str]
    quick: bool = True


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check token, data folder, database, device, models, LoRA library and workers",
    )
    parser.add_argument(
        "--quick", action="store_true", help="skip the model load and online checks"
    )
    parser.set_defaults(handler=doctor)


def check_token(settings: Settings) -> str:
    if settings.discord_token is None:
        raise UserError("DISCORD_TOKEN is not set: add it to .env to run the bot")
    if len(settings.discord_token.get_secret_value().split(".")) != 3:
        raise UserError("DISCORD_TOKEN does not look like a bot token: copy it again")
    return "present"


def check_token_online(settings: Settings) -> str:
    """Ask Discord who the token belongs to; offline is a skip, a refusal is a failure."""
    if settings.discord_token is None:
        raise Skipped("no token")
    base = (settings.discord_api_base or DISCORD_API).rstrip("/")
    request = urllib.request.Request(
        f"{base}/users/@me",
        headers={
            "Authorization": f"Bot {settings.discord_token.get_secret_value()}",
            "User-Agent": "DiscordBot (dreamcord doctor, 1)",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TOKEN_CHECK_TIMEOUT_S) as response:
            user = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise UserError(
                "Discord refused DISCORD_TOKEN: reset it in the Developer Portal"
            ) from None
        raise Skipped(f"Discord answered {error.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise Skipped(f"Discord is not reachable ({getattr(error, 'reason', error)})") from None
    return f"valid, the bot is {user.get('username', '?')} ({user.get('id', '?')})"


def check_data_dir(settings: Settings) -> str:
    folder = settings.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"DATA_DIR={folder} is not writable ({error.strerror}): fix it") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"DATA_DIR={folder} has only {free / 1024**3:.1f} GiB free: make room")
    return f"{folder.resolve()} writable, {free / 1024**3:.0f} GiB free"


def check_database(settings: Settings) -> str:
    """Open (and migrate) the database, then SQLite's own integrity check."""
    from bot.container import open_database

    async def inspect() -> str:
        db, repos = await open_database(settings)
        try:
            row = await db.fetch_one("PRAGMA quick_check")
            result = row[0] if row else "no answer"
            if result != "ok":
                raise UserError(
                    f"the database is damaged ({result}): restore a backup (dreamcord backup)"
                )
            jobs = await repos.jobs.list_queued()
            return f"integrity ok, {len(jobs)} jobs waiting"
        finally:
            await db.close()

    return asyncio.run(inspect())


def check_library(settings: Settings) -> str:
    """Every registered LoRA, embedding, hypernetwork and ControlNet has its file, of the
    recorded size."""
    from bot.container import open_database

    async def inspect() -> str:
        db, repos = await open_database(settings)
        try:
            entries: list[LoraEntry | EmbeddingEntry | HypernetworkEntry | ControlNetEntry] = [
                *await repos.loras.list(),
                *await repos.embeddings.list(),
                *await repos.hypernetworks.list(),
                *await repos.controlnets.list(),
            ]
        finally:
            await db.close()
        broken = []
        for entry in entries:
            file = settings.data_dir / entry.path
            if not file.is_file() or file.stat().st_size != entry.size_bytes:
                broken.append(entry.name)
        if broken:
            raise UserError(
                f"{len(broken)} library files are missing or changed ({', '.join(broken[:5])}): "
                "restore DATA_DIR from a backup, or `dreamcord lora remove NAME` (or `embedding`, "
                "`hypernetwork`, `controlnet`) and add them again"
            )
        return (
            f"{len(entries)} LoRAs, embeddings, hypernetworks and ControlNets, every file present"
        )

    return asyncio.run(inspect())


def check_device(settings: Settings) -> str:
    import torch

    from pipeline.models import choose_placement

    placement = choose_placement(
        settings.device, settings.dtype, settings.memory_mode, settings.attention
    )
    detail = f"{placement.device}, {placement.dtype_name}, memory mode {placement.memory_mode}"
    if placement.device == "cuda":
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        detail += f", {name} {free / 1024**3:.1f}/{total / 1024**3:.1f} GiB free"
    return detail + f", attention {placement.attention}"


def check_models(settings: Settings) -> str:
    """MODEL and MODELS_DIR by kind, from file headers only; inpainting ones named as such.

    An inpainting checkpoint makes no /imagine images (only edits), so it cannot be the default.
    """
    from bot.models import model_sources

    sources, default = model_sources(settings)
    try:
        sources[default].require_txt2img()
    except UserError as error:
        raise UserError(f"MODEL: {error}") from None
    detail = f"{len(sources)} configured, default {default} ({sources[default].description})"
    inpainting = [name for name, source in sources.items() if source.inpainting]
    if inpainting:
        detail += f"; inpainting, for image edits: {', '.join(inpainting)}"
    return detail


def check_image_prompts(settings: Settings) -> str:
    """IP_ADAPTER and IMAGE_ENCODER, from the adapter's header and the encoder's config."""
    files = settings.image_prompt_files()
    if files is None:
        raise Skipped("image prompts are off (IP_ADAPTER and IMAGE_ENCODER unset)")
    layout = files.layout
    return (
        f"{files.adapter.name} ({len(layout.layer_widths)} layers, reads {layout.embed_width}-wide "
        f"embeddings) with the encoder in {files.encoder}"
    )


def check_worker(settings: Settings) -> str:
    """The running bot's worker, from the heartbeat file it rewrites every few seconds."""
    import time

    from bot.heartbeat import STALE_AFTER_S, heartbeat_path, read_heartbeat

    path = heartbeat_path(settings.data_dir)
    try:
        beat = read_heartbeat(path)
    except ValueError as error:
        raise UserError(f"{error}: restart the bot, which writes it anew") from None
    if beat is None:
        raise Skipped("the bot is not running on this DATA_DIR (no heartbeat file)")
    written_at, health = beat
    now = time.time()
    if now - written_at > STALE_AFTER_S:
        raise UserError(
            f"the bot's heartbeat is {now - written_at:.0f} s old: the bot is not running or "
            "its event loop is blocked; restart it"
        )
    if not health.ok(now):
        raise UserError(f"the image worker is {health.describe(now)}")
    return health.describe(now)


MIN_REDIS = (6, 2)
"""XAUTOCLAIM, which takes back a silent worker's batches, came with Redis 6.2."""


def check_redis(settings: Settings) -> str:
    """QUEUE_URL answers a PING, from a Redis new enough for the workers' streams."""
    if settings.queue_url is None:
        raise Skipped("QUEUE_URL is unset: images are made in this process")
    from pipeline.remote.streams import Streams, shown_url

    url = settings.queue_url.get_secret_value()

    async def inspect() -> str:
        streams = await Streams.connect(url)  # a UserError naming the URL when it fails
        try:
            info = await streams.client.info("server")
        finally:
            await streams.close()
        version = str(info.get("redis_version", "0"))
        if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < MIN_REDIS:
            raise UserError(
                f"Redis {version} at {shown_url(url)} is too old: taking back a silent worker's "
                "batches needs Redis 6.2 or newer; upgrade the server"
            )
        return f"Redis {version} at {shown_url(url)} answers"

    return asyncio.run(inspect())


def check_workers(settings: Settings) -> str:
    """The live GPU workers, from the heartbeats they keep in Redis."""
    if settings.queue_url is None:
        raise Skipped("QUEUE_URL is unset: no remote workers")
    import time

    from pipeline.remote.streams import Streams

    url = settings.queue_url.get_secret_value()

    async def heartbeats() -> list[Heartbeat]:
        streams = await Streams.connect(url)
        try:
            return await streams.heartbeats()
        finally:
            await streams.close()

    beats = asyncio.run(heartbeats())
    if not beats:
        raise UserError(
            "no worker is running, so no image is made: start `dreamcord worker` on a GPU "
            "machine with the same QUEUE_URL and WORKER_SECRET"
        )
    now = time.time()
    return f"{len(beats)} live: " + "; ".join(
        f"{beat.name} ({beat.cuda_device or beat.device}, {beat.state}, "
        f"{beat.images_per_s:.2f} images/s, seen {max(0.0, now - beat.time):.0f} s ago)"
        for beat in sorted(beats, key=lambda beat: beat.name)
    )


def check_model(settings: Settings) -> str:
    from bot.models import build_engine
    from pipeline.backend import ImageTask
    from pipeline.request import GenerationRequest

    engine = build_engine(settings)
    request = GenerationRequest("doctor", width=64, height=64, steps=1, sampler="Euler")
    results = engine.run([ImageTask("doctor", 0, request)], lambda *_: None, lambda: False)
    return f"{settings.model} loads and made a {results[0].image.width}px test image"


CHECKS = (
    Check("token", check_token),
    Check("token online", check_token_online, quick=False),
    Check("data dir", check_data_dir),
    Check("database", check_database),
    Check("library", check_library),
    Check("device", check_device),
    Check("models", check_models),
    Check("image prompts", check_image_prompts),
    Check("worker", check_worker),
    Check("redis", check_redis),
    Check("workers", check_workers),
    Check("model", check_model, quick=False),
)


def doctor(args: argparse.Namespace, settings: Settings) -> int:
    failures = 0
    for check in CHECKS:
        if args.quick and not check.quick:
            continue
        try:
            print(f"OK    {check.name}: {check.run(settings)}", flush=True)
        except Skipped as reason:
            print(f"SKIP  {check.name}: {reason}", flush=True)
        except UserError as error:
            failures += 1
            print(f"FIX   {check.name}: {error}", flush=True)
    return 1 if failures else 0
