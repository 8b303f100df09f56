"""`dreamcord generate`: make images from the command line through the bot's own service.

The job takes the same path as a Discord job (service, queue, planner, worker, engine, SQLite),
only the presenter differs: a progress bar, then the PNGs copied into `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import followups
from bot.cli.progress import ProgressBar
from bot.container import open_database, open_services
from bot.models import limits_of
from bot.requests import build_request
from bot.service import Origin
from bot.settings import Settings
from pipeline.errors import UserError
from pipeline.infotext import options_from_parameters
from pipeline.limits import check_request
from pipeline.png import read_png
from pipeline.request import GenerationRequest, Mode
from pipeline.samplers import SAMPLER_NAMES, SCHEDULE_NAMES
from pipeline.sizes import fit_size, parse_size
from pipeline.upscalers import UPSCALER_NAMES

if TYPE_CHECKING:
    from PIL.Image import Image

    from data.generations import Generation
    from data.jobs import Job as StoredJob

CLI_USER_ID = 0
"""Jobs from the command line are stored under this user id."""
DEFAULT_IMG2IMG_STRENGTH = 0.6


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="make images from a prompt and write them as PNG files",
        description="Make images with the same engine as the bot. Defaults come from .env.",
    )
    parser.add_argument("prompt", nargs="?", help="the prompt, in the A1111 prompt language")
    parser.add_argument("--negative", help="the negative prompt (default: DEFAULT_NEGATIVE)")
    parser.add_argument("--size", help="WxH such as 512x768, or an aspect ratio such as 2:3")
    parser.add_argument(
        "--count", type=int, default=1, help="how many images (image i uses seed + i)"
    )
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    parser.add_argument("--steps", type=int, help="sampling steps")
    parser.add_argument("--cfg", type=float, help="CFG scale: how closely to follow the prompt")
    parser.add_argument("--sampler", help=f"one of: {', '.join(SAMPLER_NAMES)}")
    parser.add_argument(
        "--schedule",
        help=f"schedule type, one of: {', '.join(SCHEDULE_NAMES)} (Automatic: the sampler's own)",
    )
    parser.add_argument("--clip-skip", type=int, help="1 (default) or 2 for anime models")
    parser.add_argument("--model", help="tiny, a .safetensors file, a diffusers folder or hub id")
    hires = parser.add_argument_group("highres fix")
    hires.add_argument("--hires", action="store_true", default=None, help="refine at a larger size")
    hires.add_argument("--hires-scale", type=float, help="1 to 2 (default 2); implies --hires")
    hires.add_argument("--hires-steps", type=int, help="default 15; 0 = same as --steps")
    hires.add_argument("--denoise", type=float, help="hires denoise (latent 0.55, Lanczos 0.35)")
    hires.add_argument(
        "--upscaler",
        help=f"one of: {', '.join(UPSCALER_NAMES)}, or a model in DATA_DIR/upscalers by file name"
        " (default Latent)",
    )
    more = parser.add_argument_group("from an earlier image (a PNG with parameters)")
    more.add_argument("--upscale", type=Path, metavar="IMAGE", help="upscale IMAGE (2x)")
    more.add_argument(
        "--factor", type=int, choices=(2, 4), default=2, help="--upscale factor: 2 or 4"
    )
    more.add_argument("--vary", type=Path, metavar="IMAGE", help="variations of IMAGE")
    more.add_argument("--init", type=Path, metavar="IMAGE", help="image to image from IMAGE")
    more.add_argument(
        "--strength", help="--vary: subtle or strong (default); --init: 0-1 (default 0.6)"
    )
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (./out)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=generate)


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
    sources = [flag for flag in ("upscale", "vary", "init") if getattr(args, flag)]
    if len(sources) > 1:
        raise UserError(f"use only one of --{' / --'.join(sources)}")
    if not args.prompt and not (args.upscale or args.vary):
        raise UserError('give a prompt, for example: dreamcord generate "a red fox"')
    started = time.perf_counter()
    with ProgressBar("generating") as bar:
        delivery = CliDelivery(bar)
        request = asyncio.run(_generate(args, settings, delivery))
    if delivery.failure is not None or delivery.generation is None:
        raise UserError(f"generation failed: {delivery.failure or 'no result'}")
    images = _write_outputs(delivery.generation, settings, args)
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


async def _generate(
    args: argparse.Namespace, settings: Settings, delivery: CliDelivery
) -> GenerationRequest:
    """Build the request (a mistake stops here, before the model loads), then run it."""
    db, repos = await open_database(settings)
    try:
        known = (
            await repos.loras.names(),
            await repos.embeddings.names(),
            await repos.hypernetworks.names(),
        )
    finally:
        await db.close()
    request = check_request(request_from_args(args, settings, *known), limits_of(settings))
    if args.model == "tiny" or (args.model is None and settings.model == "tiny"):
        print("note: the tiny model has random weights: its images are noise", file=sys.stderr)
    services = await open_services(settings, delivery, model_override=args.model)
    try:
        ticket = await services.generation.submit(request, Origin(user_id=CLI_USER_ID))
        await services.generation.wait(ticket.job_id)
    finally:
        await services.close()
    return request


def request_from_args(
    args: argparse.Namespace,
    settings: Settings,
    known_loras: list[str] | None = None,
    known_embeddings: list[str] | None = None,
    known_hypernets: list[str] | None = None,
) -> GenerationRequest:
    """Options over the defaults; from an earlier image's parameters for --upscale and --vary."""
    explicit: dict[str, Any] = {
        "count": args.count,
        "seed": args.seed,
        "steps": args.steps,
        "cfg": args.cfg,
        "sampler": args.sampler,
        "schedule": args.schedule,
        "clip_skip": args.clip_skip,
        "hires": args.hires,
        "hires_scale": args.hires_scale,
        "hires_steps": args.hires_steps,
        "hires_denoise": args.denoise,
        "hires_upscaler": args.upscaler,
    }
    if args.size:
        explicit["width"], explicit["height"] = parse_size(args.size, settings.max_pixels)
    prompt, negative = args.prompt, args.negative
    source = args.upscale or args.vary
    if source is not None:
        _, parameters = read_png(source)
        if not parameters:
            raise UserError(f"{source} has no generation parameters: use a PNG made by an SD tool")
        saved_prompt, saved_negative, saved = options_from_parameters(parameters)
        prompt = prompt or saved_prompt
        negative = saved_negative if negative is None else negative
        explicit = {**saved, **{key: value for key, value in explicit.items() if value is not None}}
        explicit["count"] = 1
    elif args.init is not None:
        image, _ = read_png(args.init)
        if not args.size:
            explicit["width"], explicit["height"] = fit_size(
                image.width, image.height, settings.max_pixels
            )
    if args.model:  # the engine's default model is then --model, with its own defaults
        settings = settings.model_copy(update={"model": args.model})
    request = build_request(
        prompt,
        settings,
        negative=negative,
        explicit=explicit,
        known_loras=known_loras or (),
        known_embeddings=known_embeddings or (),
        known_hypernets=known_hypernets or (),
    ).request
    if args.upscale is not None:
        path = args.upscale.resolve()
        return followups.upscale(request, path, request.seed, None, args.factor)
    if args.vary is not None:
        strength = args.strength or "strong"
        if strength not in followups.VARIATION_STRENGTH:
            raise UserError(f"--strength {strength!r} with --vary: use subtle or strong")
        count = min(4, settings.max_images) if args.count == 1 else args.count
        return followups.variations(request, request.seed, None, strength, count)
    if args.init is not None:
        return replace(
            request,
            mode=Mode.IMG2IMG,
            init_image=str(args.init.resolve()),
            strength=_number_strength(args.strength),
        )
    return request


def _number_strength(text: str | None) -> float:
    if text is None:
        return DEFAULT_IMG2IMG_STRENGTH
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--strength {text!r} with --init: use a number from 0 to 1") from None


def _write_outputs(
    generation: Generation, settings: Settings, args: argparse.Namespace
) -> list[dict[str, Any]]:
    args.out.mkdir(parents=True, exist_ok=True)
    images = []
    for image in generation.images:
        path = free_path(args.out, f"{time.strftime('%Y%m%d-%H%M%S')}-{image.seed}")
        source = settings.data_dir / "images" / image.path
        write_atomically(path, source.read_bytes())
        entry = {
            "path": str(path),
            "seed": image.seed,
            "width": image.width,
            "height": image.height,
        }
        if image.variation_seed is not None:
            entry["variation_seed"] = image.variation_seed
        images.append(entry)
        if not args.json:
            print(path)
    return images


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
