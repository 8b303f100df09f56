"""`dreamcord lora ...`: manage the LoRA library (add, list, info, remove, rename, scan, check).

The verbs are shared with `dreamcord embedding ...`, `hypernetwork ...` and `controlnet ...`: each
library is described by a `bot.library_kinds.LibraryKind`, and one set of handlers serves them
all, on the audited libraries the bot uses (`App.libraries`), so the CLI's changes are in the
audit log too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.progress import ProgressBar
from bot.guild import Actor
from bot.libraries import size_text
from bot.library_kinds import LORAS, LibraryKind, skipped_text
from bot.settings import Settings
from pipeline.errors import UserError

if TYPE_CHECKING:
    from bot.libraries import AuditedLibrary

CLI = Actor(guild_id=None, user_id=None)
"""Who the audit log names for a change made with the CLI: no guild, no user."""


def register(subparsers: argparse._SubParsersAction) -> None:
    add, _ = add_library_commands(subparsers, LORAS)
    add.add_argument("--weight", type=float, help="default weight when a prompt gives none (1)")
    add.add_argument(
        "--triggers", help="comma-separated trigger words (default: from the file's metadata)"
    )
    add.set_defaults(add_options=_lora_options)


def _lora_options(args: argparse.Namespace) -> dict[str, Any]:
    triggers = None if args.triggers is None else tuple(args.triggers.split(","))
    return {"weight": args.weight, "triggers": triggers}


def add_library_commands(
    subparsers: argparse._SubParsersAction,
    kind: LibraryKind,
    inspect: Callable[[argparse.Namespace, Settings], int] | None = None,
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """Add `dreamcord <kind> add|list|info|remove|rename|enable|disable|scan|check`.

    `inspect` is `check`'s handler for this kind (default: as an adapter, `check_file`). Returns the
    `add` parser and the kind's subcommands, for options and verbs only one kind has.
    """
    what = kind.what
    parser = subparsers.add_parser(
        kind.command, help=f"manage the {what} library: add, list, inspect, remove"
    )
    commands = parser.add_subparsers(
        title=f"{kind.command} commands", metavar="COMMAND", required=True
    )

    add = commands.add_parser(
        "add", help=f"check a .safetensors file (a path or an https link) and add it as a {what}"
    )
    add.add_argument("source", metavar="FILE|URL", help="a .safetensors file or a https:// link")
    add.add_argument("--name", help="the name prompts use (default: from the file)")
    add.set_defaults(handler=library_handler(kind, _add), add_options=lambda _: {})

    listing = commands.add_parser("list", help=f"list the {what}s, as a table")
    listing.add_argument("search", nargs="?", help="only names containing this text")
    listing.set_defaults(handler=library_handler(kind, _list))

    for verb, action, text in (
        ("info", _info, f"show everything known about a {what}"),
        ("remove", _remove, f"remove a {what} and delete its file"),
        ("enable", _enable, f"let prompts use a disabled {what} again"),
        ("disable", _disable, f"keep a {what} but refuse prompts that use it"),
    ):
        command = commands.add_parser(verb, help=text)
        command.add_argument("name", metavar="NAME")
        command.set_defaults(handler=library_handler(kind, action))

    rename = commands.add_parser("rename", help=f"give a {what} a new name")
    rename.add_argument("name", metavar="OLD")
    rename.add_argument("new_name", metavar="NEW")
    rename.set_defaults(handler=library_handler(kind, _rename))

    scan = commands.add_parser(
        "scan",
        help=f"add every .safetensors in DATA_DIR/{kind.command}s/incoming "
        "(exit 2 if some were refused)",
    )
    scan.add_argument("folder", type=Path, nargs="?", help="another folder to take files from")
    scan.set_defaults(handler=library_handler(kind, _scan))

    check = commands.add_parser(
        "check", help="inspect FILE without loading a model (exit 0 usable, 2 refused)"
    )
    check.add_argument("file", type=Path, metavar="FILE", help="a .safetensors file")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=inspect or check_file)
    return add, commands


Verb = Callable[["AuditedLibrary", argparse.Namespace], Awaitable[int]]


def library_handler(kind: LibraryKind, verb: Verb) -> Callable[[argparse.Namespace, Settings], int]:
    def handle(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_with_library(kind, verb, args, settings))

    return handle


async def _with_library(
    kind: LibraryKind, verb: Verb, args: argparse.Namespace, settings: Settings
) -> int:
    from bot.container import open_library_verbs

    db, libraries = await open_library_verbs(settings)
    try:
        return await verb(libraries.of(kind.command), args)
    finally:
        await db.close()


async def _add(library: AuditedLibrary, args: argparse.Namespace) -> int:
    options = {"name": args.name, **args.add_options(args)}
    if "://" not in args.source:
        entry = await library.add_file(Path(args.source), CLI, **options)
    else:
        with ProgressBar("downloading", unit="B") as bar:
            entry = await library.add_url(args.source, CLI, bar.update, **options)
    print(f"added {library.kind.what} {entry.name!r} ({size_text(entry.size_bytes)})")
    return 0


async def _list(library: AuditedLibrary, args: argparse.Namespace) -> int:
    kind, entries = library.kind, await library.list(args.search)
    if not entries:
        print(f"no {kind.what}s" + (f" matching {args.search!r}" if args.search else ""))
        return 0
    rows = [
        (*kind.row(entry), size_text(entry.size_bytes), _on(entry.enabled)) for entry in entries
    ]
    print(table((*kind.columns, "SIZE", "ENABLED"), rows))
    return 0


async def _info(library: AuditedLibrary, args: argparse.Namespace) -> int:
    kind, entry = library.kind, await library.info(args.name)
    lines = [
        ("name", entry.name),
        ("enabled", _on(entry.enabled)),
        ("base", entry.base),
        *kind.details(entry),
        ("size", f"{entry.size_bytes:,} bytes"),
        ("sha256", entry.sha256),
        ("added", f"{entry.added_at} from {entry.source}"),
    ]
    for label, value in lines:
        print(f"{label:<9} {value}")
    return 0


async def _remove(library: AuditedLibrary, args: argparse.Namespace) -> int:
    entry = await library.remove(args.name, CLI)
    print(f"removed {library.kind.what} {entry.name!r} and its file")
    return 0


async def _rename(library: AuditedLibrary, args: argparse.Namespace) -> int:
    entry = await library.rename(args.name, args.new_name, CLI)
    print(f"renamed {library.kind.what} {args.name!r} to {entry.name!r}")
    return 0


async def _enable(library: AuditedLibrary, args: argparse.Namespace) -> int:
    entry = await library.set_enabled(args.name, True, CLI)
    print(f"enabled {library.kind.what} {entry.name!r}")
    return 0


async def _disable(library: AuditedLibrary, args: argparse.Namespace) -> int:
    entry = await library.set_enabled(args.name, False, CLI)
    print(f"disabled {library.kind.what} {entry.name!r}")
    return 0


async def _scan(library: AuditedLibrary, args: argparse.Namespace) -> int:
    folder = args.folder or library.drop_folder
    outcomes = await library.scan(CLI, folder)
    if not outcomes:
        print(f"no .safetensors files in {folder}")
    for outcome in outcomes:
        print(f"{outcome.file}: {outcome.message}")
    return 2 if any(outcome.refused for outcome in outcomes) else 0


def check_file(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that `dreamcord --help` stays free of torch.
    from bot.library import attention_widths, text_width
    from pipeline.lora.inspection import inspect_file

    path: Path = args.file
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file")
    model = settings.model
    result = inspect_file(path, text_width(model), attention_widths(model))
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        rows = [
            ("file", path.name),
            ("verdict", "usable" if result.ok else f"refused: {result.reason}"),
            ("kind", (result.kind or "?") + (" (DoRA)" if result.dora else "")),
            ("base", result.base),
            ("rank", "-" if result.rank is None else str(result.rank)),
            ("alpha", "-" if result.alpha is None else f"{result.alpha:g}"),
            ("modules", str(result.modules)),
            ("skipped", skipped_text(result.skipped)),
            ("bundled", ", ".join(result.embeddings) or "-"),
            ("vectors", str(result.vectors)),
            ("size", f"{result.size:,} bytes"),
            ("triggers", ", ".join(result.triggers[:8]) or "-"),
        ]
        for label, value in rows:
            print(f"{label:<9} {value}")
    return 0 if result.ok else 2


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, as `docker ps` prints them."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _on(enabled: bool) -> str:
    return "yes" if enabled else "no"
