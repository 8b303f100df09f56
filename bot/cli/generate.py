"""`dreamcord generate`: make images from the command line with the bot's own engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.progress import ProgressBar
from bot.container import open_services
from bot.models import limits_of
from bot.service import Origin
from bot.settings import Settings
from pipeline.errors import UserError
from pipeline.limits import check_request
from pipeline.request import GenerationRequest
from pipeline.samplers import SAMPLER_NAMES
from pipeline.sizes import parse_size

if TYPE_CHECKING:
    from PIL.Image import Image

    from data.generations import Generation
    from data.jobs import Job as StoredJob

CLI_USER_ID = 0
"""Jobs from the command line are stored under this user id."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="make images from a prompt and write them as PNG files",
        description="Make images with the same engine as the bot. Defaults come from .env.",
    )
    parser.add_argument("prompt", help="the prompt, in the A1111 prompt language")
    parser.add_argument("--negative", help="the negative prompt (default: DEFAULT_NEGATIVE)")
    parser.add_argument("--size", help="WxH such as 512x768, or an aspect ratio such as 2:3")
    parser.add_argument("--count", type=int, help="how many images (image i uses seed + i)")
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    parser.add_argument("--steps", type=int, help="sampling steps")
    parser.add_argument("--cfg", type=float, help="CFG scale: how closely to follow the prompt")
    parser.add_argument("--sampler", help=f"one of: {', '.join(SAMPLER_NAMES)}")
    parser.add_argument("--clip-skip", type=int, default=1, help="1 (default) or 2 for anime")
    parser.add_argument("--model", help="tiny, a .safetensors file, a diffusers folder or hub id")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (./out)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=generate)


def request_from_args(args: argparse.Namespace, settings: Settings) -> GenerationRequest:
    """Options over settings defaults, checked against the limits."""
    width, height = (
        parse_size(args.size, settings.max_pixels) if args.size else settings.default_width_height
    )
    request = GenerationRequest(
        prompt=args.prompt,
        negative=settings.default_negative if args.negative is None else args.negative,
        width=width,
        height=height,
        steps=settings.default_steps if args.steps is None else args.steps,
        cfg=settings.default_cfg if args.cfg is None else args.cfg,
        sampler=args.sampler or settings.default_sampler,
        seed=secrets.randbelow(2**32) if args.seed is None else args.seed,
        count=1 if args.count is None else args.count,
        clip_skip=args.clip_skip,
    )
    return check_request(request, limits_of(settings))


class CliDelivery:
    """The CLI's presenter: a progress bar while the job runs, the outcome kept for main()."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.generation: Generation | None = None
        self.failure: str | None = None
        self.started_at: float | None = None

    def progress(self, job: StoredJob, step: int, total: int, preview: Image | None) -> None:
        self.started_at = self.started_at or time.perf_counter()
        self.bar.update(step, total)

    async def deliver(self, job: StoredJob, generation: Generation) -> None:
        self.generation = generation

    async def report_failure(self, job: StoredJob, message: str) -> None:
        self.failure = message


def generate(args: argparse.Namespace, settings: Settings) -> int:
    request = request_from_args(args, settings)
    if args.model == "tiny" or (args.model is None and settings.model == "tiny"):
        print("note: the tiny model has random weights: its images are noise", file=sys.stderr)
    started = time.perf_counter()
    with ProgressBar("generating") as bar:
        delivery = CliDelivery(bar)
        asyncio.run(_run_job(settings, request, args.model, delivery))
    if delivery.failure is not None or delivery.generation is None:
        raise UserError(f"generation failed: {delivery.failure or 'no result'}")
    args.out.mkdir(parents=True, exist_ok=True)
    images = []
    for image in delivery.generation.images:
        path = free_path(args.out, f"{time.strftime('%Y%m%d-%H%M%S')}-{image.seed}")
        source = settings.data_dir / "images" / image.path
        write_atomically(path, source.read_bytes())
        images.append(
            {"path": str(path), "seed": image.seed, "width": image.width, "height": image.height}
        )
        if not args.json:
            print(path)
    if args.json:
        finished = time.perf_counter()
        timings = {
            "wait_s": round((delivery.started_at or finished) - started, 3),
            "wall_s": round(finished - started, 3),
        }
        report = {"images": images, "params": asdict(request), "timings": timings}
        json.dump(report, sys.stdout)
        print()
    return 0


async def _run_job(
    settings: Settings, request: GenerationRequest, model: str | None, delivery: CliDelivery
) -> None:
    """Submit one job through the same service, queue and worker as the bot, and wait."""
    services = await open_services(settings, delivery, model_override=model)
    try:
        ticket = await services.generation.submit(request, Origin(user_id=CLI_USER_ID))
        await services.generation.wait(ticket.job_id)
    finally:
        await services.close()


def free_path(folder: Path, stem: str) -> Path:
    """`folder/stem.png`, or `stem-1.png` and so on when that name is taken."""
    path, number = folder / f"{stem}.png", 0
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.png"
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temp file and rename, so no half-written PNG is ever visible."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        temp.write_bytes(data)
        temp.replace(path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise UserError(f"could not write {path}: {error.strerror}") from None
