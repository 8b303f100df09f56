"""`dreamcord lora check FILE`: say what a LoRA or embedding file is and whether it can be used."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bot.settings import Settings
from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lora", help="inspect LoRA and embedding files")
    commands = parser.add_subparsers(title="lora commands", metavar="COMMAND", required=True)
    check = commands.add_parser(
        "check", help="inspect FILE without loading a model (exit 0 usable, 2 refused)"
    )
    check.add_argument("file", type=Path, metavar="FILE", help="a .safetensors file")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=check_file)


def check_file(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that `dreamcord --help` stays free of torch.
    from pipeline.lora.inspection import SD1_WIDTH, inspect_file
    from pipeline.tiny import TINY_WIDTH

    path: Path = args.file
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file")
    width = TINY_WIDTH if settings.model == "tiny" else SD1_WIDTH
    result = inspect_file(path, model_width=width)
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        rows = [
            ("file", path.name),
            ("verdict", "usable" if result.ok else f"refused: {result.reason}"),
            ("kind", result.kind or "?"),
            ("base", result.base),
            ("rank", "-" if result.rank is None else str(result.rank)),
            ("alpha", "-" if result.alpha is None else f"{result.alpha:g}"),
            ("modules", str(result.modules)),
            ("vectors", str(result.vectors)),
            ("size", f"{result.size:,} bytes"),
            ("triggers", ", ".join(result.triggers[:8]) or "-"),
        ]
        for label, value in rows:
            print(f"{label:<9} {value}")
    return 0 if result.ok else 2
