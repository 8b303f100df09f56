"""`dreamcord controlnet ...`: manage ControlNet models with the LoRA library's verbs, plus a type.

The type (canny, depth, openpose, ...) is guessed from the file's name when it is added; `--type`
sets it then, `set-type` later.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.lora import CLI, add_library_commands, library_handler
from bot.library_kinds import CONTROLNETS, parameters_text
from bot.settings import Settings
from pipeline.control.model_types import CONTROL_TYPES, parse_control_type
from pipeline.errors import UserError

if TYPE_CHECKING:
    from bot.libraries import AuditedLibrary


def register(subparsers: argparse._SubParsersAction) -> None:
    add, commands = add_library_commands(subparsers, CONTROLNETS, inspect=check_file)
    add.add_argument(
        "--type",
        choices=CONTROL_TYPES,
        metavar="TYPE",
        help="what the model follows (default: guessed from the file name): "
        + ", ".join(CONTROL_TYPES),
    )
    add.set_defaults(add_options=_controlnet_options)
    set_type = commands.add_parser("set-type", help="set what a ControlNet follows")
    set_type.add_argument("name", metavar="NAME")
    set_type.add_argument("control_type", metavar="TYPE", help=", ".join(CONTROL_TYPES))
    set_type.set_defaults(handler=library_handler(CONTROLNETS, _set_type))


def _controlnet_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"control_type": None if args.type is None else parse_control_type(args.type)}


async def _set_type(library: AuditedLibrary, args: argparse.Namespace) -> int:
    entry = await library.set_control_type(args.name, args.control_type, CLI)
    print(f"ControlNet {entry.name!r} is now of type {entry.control_type}")
    return 0


def check_file(args: argparse.Namespace, settings: Settings) -> int:
    """Inspect FILE as a ControlNet, without loading a model."""
    from bot.library import text_width
    from pipeline.control.inspection import inspect_controlnet
    from pipeline.control.model_types import guess_control_type

    path: Path = args.file
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file")
    result = inspect_controlnet(path, text_width(settings.model))
    guessed = guess_control_type(path.name, result.metadata)
    if args.json:
        print(json.dumps({**result.as_json(), "type": guessed}, ensure_ascii=False))
    else:
        rows = [
            ("file", path.name),
            ("verdict", "usable" if result.ok else f"refused: {result.reason}"),
            ("type", f"{guessed} (guessed from the name)"),
            ("layout", result.layout or "-"),
            ("base", result.base),
            ("hint", f"{result.hint_channels} channels" if result.has_hint else "none"),
            ("parameters", parameters_text(result.parameters)),
            ("size", f"{result.size:,} bytes"),
        ]
        for label, value in rows:
            print(f"{label:<10} {value}")
    return 0 if result.ok else 2
