"""`dreamcord lora ...`: manage the LoRA library (add, list, info, remove, rename, scan, check).

The verbs are shared with `dreamcord embedding ...` and `dreamcord hypernetwork ...`: each
library is described by a `LibraryCommand`, and one set of handlers serves them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cli.progress import ProgressBar
from bot.settings import Settings
from pipeline.errors import UserError

if TYPE_CHECKING:
    from bot.library import Library
    from data.registry import LoraEntry
    from data.repositories import Repositories

MIB = 1024**2


@dataclass(frozen=True)
class LibraryCommand:
    """What differs between `dreamcord lora`, `embedding` and `hypernetwork`."""

    command: str
    what: str
    max_download_bytes: int
    build: Callable[[Repositories, Settings], Library[Any]]
    columns: tuple[str, ...]
    row: Callable[[Any], tuple[str, ...]]
    """One `list` table row of an entry, in the order of `columns`."""
    details: Callable[[Any], list[tuple[str, str]]]
    """The `info` lines of an entry, besides the fields every entry has."""


def _build_loras(repos: Repositories, settings: Settings) -> Library[Any]:
    from bot.library import LoraLibrary, text_width

    return LoraLibrary(repos.loras, settings.data_dir, text_width(settings.model))


def _lora_row(entry: LoraEntry) -> tuple[str, ...]:
    rank = "-" if entry.rank is None else str(entry.rank)
    triggers = ", ".join(entry.triggers[:3]) + (" ..." if len(entry.triggers) > 3 else "")
    return (entry.name, entry.kind, rank, f"{entry.default_weight:g}", triggers or "-")


def _lora_details(entry: LoraEntry) -> list[tuple[str, str]]:
    return [
        ("kind", entry.kind + (" (DoRA)" if entry.dora else "")),
        ("rank", "-" if entry.rank is None else str(entry.rank)),
        ("alpha", "-" if entry.alpha is None else f"{entry.alpha:g}"),
        ("modules", str(entry.modules)),
        ("skipped", skipped_text(entry.skipped_keys)),
        ("bundled", ", ".join(entry.embeddings) or "-"),
        ("weight", f"{entry.default_weight:g}"),
        ("triggers", ", ".join(entry.triggers) or "-"),
    ]


LORAS = LibraryCommand(
    command="lora",
    what="LoRA",
    max_download_bytes=2048 * MIB,
    build=_build_loras,
    columns=("NAME", "KIND", "RANK", "WEIGHT", "TRIGGERS"),
    row=_lora_row,
    details=_lora_details,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    add = add_library_commands(subparsers, LORAS)
    add.add_argument("--weight", type=float, help="default weight when a prompt gives none (1)")
    add.add_argument(
        "--triggers", help="comma-separated trigger words (default: from the file's metadata)"
    )
    add.set_defaults(add_options=_lora_options)


def _lora_options(args: argparse.Namespace) -> dict[str, Any]:
    triggers = None if args.triggers is None else tuple(args.triggers.split(","))
    return {"weight": args.weight, "triggers": triggers}


def add_library_commands(
    subparsers: argparse._SubParsersAction, kind: LibraryCommand
) -> argparse.ArgumentParser:
    """Add `dreamcord <kind> add|list|info|remove|rename|enable|disable|scan|check`.

    Returns the `add` parser, for options only one kind has.
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
    add.set_defaults(handler=_handler(kind, _add), add_options=lambda _: {})

    listing = commands.add_parser("list", help=f"list the {what}s, as a table")
    listing.add_argument("search", nargs="?", help="only names containing this text")
    listing.set_defaults(handler=_handler(kind, _list))

    for verb, action, text in (
        ("info", _info, f"show everything known about a {what}"),
        ("remove", _remove, f"remove a {what} and delete its file"),
        ("enable", _enable, f"let prompts use a disabled {what} again"),
        ("disable", _disable, f"keep a {what} but refuse prompts that use it"),
    ):
        command = commands.add_parser(verb, help=text)
        command.add_argument("name", metavar="NAME")
        command.set_defaults(handler=_handler(kind, action))

    rename = commands.add_parser("rename", help=f"give a {what} a new name")
    rename.add_argument("name", metavar="OLD")
    rename.add_argument("new_name", metavar="NEW")
    rename.set_defaults(handler=_handler(kind, _rename))

    scan = commands.add_parser(
        "scan",
        help=f"add every .safetensors in DATA_DIR/{kind.command}s/incoming "
        "(exit 2 if some were refused)",
    )
    scan.add_argument("folder", type=Path, nargs="?", help="another folder to take files from")
    scan.set_defaults(handler=_handler(kind, _scan))

    check = commands.add_parser(
        "check", help="inspect FILE without loading a model (exit 0 usable, 2 refused)"
    )
    check.add_argument("file", type=Path, metavar="FILE", help="a .safetensors file")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=check_file)
    return add


Verb = Callable[["Library[Any]", LibraryCommand, argparse.Namespace], Awaitable[int]]


def _handler(kind: LibraryCommand, verb: Verb) -> Callable[[argparse.Namespace, Settings], int]:
    def handle(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(_with_library(kind, verb, args, settings))

    return handle


async def _with_library(
    kind: LibraryCommand, verb: Verb, args: argparse.Namespace, settings: Settings
) -> int:
    from bot.container import open_database

    db, repos = await open_database(settings)
    try:
        library = kind.build(repos, settings)
        await library.refresh()
        return await verb(library, kind, args)
    finally:
        await db.close()


async def _add(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    from data.registry import Source

    options = args.add_options(args)
    if "://" not in args.source:
        entry = await library.add(Path(args.source), name=args.name, source=Source.CLI, **options)
    else:
        from bot.downloads import download

        with ProgressBar("downloading", unit="B") as bar:
            downloaded = await download(
                args.source,
                library.store.folder,
                max_bytes=kind.max_download_bytes,
                on_progress=bar.update,
            )
        try:
            entry = await library.add(
                downloaded.path,
                name=args.name,
                filename=downloaded.filename,
                source=Source.URL,
                move=True,
                **options,
            )
        finally:
            downloaded.path.unlink(missing_ok=True)
    print(f"added {kind.what} {entry.name!r} ({_size(entry.size_bytes)})")
    return 0


async def _list(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    entries = await library.list(args.search)
    if not entries:
        print(f"no {kind.what}s" + (f" matching {args.search!r}" if args.search else ""))
        return 0
    rows = [(*kind.row(entry), _size(entry.size_bytes), _on(entry.enabled)) for entry in entries]
    print(table((*kind.columns, "SIZE", "ENABLED"), rows))
    return 0


async def _info(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    entry = await library.info(args.name)
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


async def _remove(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    entry = await library.remove(args.name)
    print(f"removed {kind.what} {entry.name!r} and its file")
    return 0


async def _rename(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    entry = await library.rename(args.name, args.new_name)
    print(f"renamed {kind.what} {args.name!r} to {entry.name!r}")
    return 0


async def _enable(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    entry = await library.set_enabled(args.name, True)
    print(f"enabled {kind.what} {entry.name!r}")
    return 0


async def _disable(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    entry = await library.set_enabled(args.name, False)
    print(f"disabled {kind.what} {entry.name!r}")
    return 0


async def _scan(library: Library[Any], kind: LibraryCommand, args: argparse.Namespace) -> int:
    folder = args.folder or library.drop_folder
    outcomes = await library.scan(folder)
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


def skipped_text(count: int) -> str:
    """How `info` and `check` say that some keys match no module of the model."""
    if not count:
        return "none"
    return f"{count} tensor keys that match no module of the model (left out)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, as `docker ps` prints them."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _size(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.0f} KiB"


def _on(enabled: bool) -> str:
    return "yes" if enabled else "no"
