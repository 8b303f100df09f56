"""`dreamcord generate`: make images from the command line with the bot's own engine."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bot.cli.progress import ProgressBar
from bot.models import build_engine, limits_of
from bot.settings import Settings
from pipeline.errors import UserError
from pipeline.limits import check_request
from pipeline.request import GenerationRequest
from pipeline.samplers import SAMPLER_NAMES
from pipeline.sizes import parse_size


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


def generate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.backend import ImageTask
    from pipeline.png import png_bytes

    request = request_from_args(args, settings)
    if args.model == "tiny" or (args.model is None and settings.model == "tiny"):
        print("note: the tiny model has random weights: its images are noise", file=sys.stderr)
    started = time.perf_counter()
    engine = build_engine(settings, args.model)
    tasks = [ImageTask("cli", index, request) for index in range(request.count)]
    with ProgressBar("generating") as bar:
        results = engine.run(tasks, lambda step, total, _: bar.update(step, total), lambda: False)
    args.out.mkdir(parents=True, exist_ok=True)
    images = []
    for result in results:
        path = free_path(args.out, f"{time.strftime('%Y%m%d-%H%M%S')}-{result.task.seed}")
        write_atomically(path, png_bytes(result.image, result.parameters))
        images.append(
            {
                "path": str(path),
                "seed": result.task.seed,
                "width": request.width,
                "height": request.height,
            }
        )
        if not args.json:
            print(path)
    timings = {**results[0].timings, "wall_s": round(time.perf_counter() - started, 3)}
    if args.json:
        json.dump({"images": images, "params": asdict(request), "timings": timings}, sys.stdout)
        print()
    return 0


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
