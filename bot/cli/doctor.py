"""`dreamcord doctor`: one line per check, OK or what to fix."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable

from bot.settings import Settings
from pipeline.errors import UserError

MIN_FREE_BYTES = 2 * 1024**3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="check device, model, data folder and token")
    parser.add_argument("--quick", action="store_true", help="skip loading the model")
    parser.set_defaults(handler=doctor)


def check_token(settings: Settings) -> str:
    if settings.discord_token is None:
        raise UserError("DISCORD_TOKEN is not set: add it to .env to run the bot")
    if len(settings.discord_token.get_secret_value().split(".")) != 3:
        raise UserError("DISCORD_TOKEN does not look like a bot token: copy it again")
    return "present"


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


def check_model(settings: Settings) -> str:
    from bot.models import build_engine
    from pipeline.backend import ImageTask
    from pipeline.request import GenerationRequest

    engine = build_engine(settings)
    request = GenerationRequest("doctor", width=64, height=64, steps=1, sampler="Euler")
    engine.run([ImageTask("doctor", 0, request)], lambda *_: None, lambda: False)
    return f"{settings.model} loads and made a 1-step test image"


def doctor(args: argparse.Namespace, settings: Settings) -> int:
    checks: list[tuple[str, Callable[[Settings], str]]] = [
        ("token", check_token),
        ("data dir", check_data_dir),
        ("device", check_device),
    ]
    if not args.quick:
        checks.append(("model", check_model))
    failures = 0
    for name, check in checks:
        try:
            print(f"OK    {name}: {check(settings)}")
        except UserError as error:
            failures += 1
            print(f"FIX   {name}: {error}")
    return 1 if failures else 0
