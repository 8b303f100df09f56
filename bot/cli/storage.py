"""`dreamcord backup PATH`, `dreamcord stats` and `dreamcord export ID`: the database and the
gallery while the bot runs."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bot.cli.generate import free_path, write_atomically
from bot.container import open_database
from bot.settings import Settings
from data import maintenance
from data.images import ImageStore
from pipeline.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    backup = subparsers.add_parser(
        "backup", help="copy the database consistently, even while the bot runs"
    )
    backup.add_argument("path", type=Path, help="new file to write, e.g. backups/2026-11-23.db")
    backup.set_defaults(handler=run_backup)
    stats = subparsers.add_parser("stats", help="counts of jobs, images, favourites; disk use")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=run_stats)
    export = subparsers.add_parser(
        "export",
        help="copy a generation's full PNGs out of the gallery (what Discord got as JPEG)",
    )
    export.add_argument("generation", type=int, help="the generation id, as /history shows it")
    export.add_argument("--out", type=Path, default=Path(), help="folder to write into (here)")
    export.set_defaults(handler=run_export)


def run_backup(args: argparse.Namespace, settings: Settings) -> int:
    async def copy() -> Path:
        db, _ = await open_database(settings)
        try:
            return await maintenance.backup(db, args.path)
        finally:
            await db.close()

    written = asyncio.run(copy())
    print(f"backed up the database to {written}; copy {settings.data_dir / 'images'} as well")
    return 0


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    async def collect() -> dict[str, Any]:
        db, _ = await open_database(settings)
        try:
            return await maintenance.stats(db, settings.data_dir / "images")
        finally:
            await db.close()

    report = asyncio.run(collect())
    if args.json:
        print(json.dumps(report))
        return 0
    jobs = ", ".join(f"{state} {count}" for state, count in report["jobs"].items())
    rows = [
        ("jobs", jobs),
        ("generations", f"{report['generations']} ({report['deleted_generations']} deleted)"),
        (
            "images",
            f"{report['images']} in {report['image_files']} files, {_size(report['image_bytes'])}",
        ),
        ("favourites", str(report["favourites"])),
        ("LoRAs", str(report["loras"])),
        ("embeddings", str(report["embeddings"])),
        ("database", _size(report["db_bytes"])),
    ]
    for name, value in rows:
        print(f"{name:<12} {value}")
    return 0


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    """Write each image of the generation as dreamcord-ID-N.png (its parameters inside)."""

    async def find() -> list[Path]:
        db, repos = await open_database(settings)
        try:
            generation = await repos.generations.get(args.generation)
        finally:
            await db.close()
        if generation is None:
            raise UserError(f"there is no generation {args.generation}: see /history for ids")
        store = ImageStore(settings.data_dir / "images")
        return [store.path_of(image.path) for image in generation.images]

    sources = asyncio.run(find())
    if not args.out.is_dir():
        raise UserError(f"--out {args.out} is not a folder: create it or name another")
    for number, source in enumerate(sources, start=1):
        if not source.is_file():
            raise UserError(f"image {number}'s file {source} is missing: restore DATA_DIR/images")
        target = free_path(args.out, f"dreamcord-{args.generation}-{number}")
        write_atomically(target, source.read_bytes())
        print(target)
    return 0


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"
