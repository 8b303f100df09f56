"""The `dreamcord` command: one subcommand per module in this package.

Each module has `register(subparsers)`, which adds its parser and sets `handler(args, settings)`.
Only argparse and the settings load here, so `--help` answers without importing torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from bot.settings import load_settings
from pipeline.errors import UserError

SERVICES = ("run", "worker")
"""Commands that run until stopped, and log as they go; the others log only warnings."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from bot.cli import (
        controlnet,
        convert,
        doctor,
        embedding,
        generate,
        hypernetwork,
        lora,
        prompt,
        run,
        storage,
        train,
        worker,
    )

    parser = _Parser(
        prog="dreamcord",
        description="A self-hosted Stable Diffusion 1.5 studio for a Discord server.",
    )
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for module in (
        run,
        generate,
        prompt,
        lora,
        train,
        embedding,
        hypernetwork,
        controlnet,
        convert,
        storage,
        doctor,
        worker,
    ):
        module.register(subparsers)
    return parser


def configure_logging(level: str, quiet: bool) -> None:
    """Log lines for the bot; only warnings for one-shot commands, unless LOG_LEVEL=DEBUG.

    transformers and diffusers read their verbosity when first imported, so it is set here,
    before any model code runs.
    """
    if level != "DEBUG":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    effective = "WARNING" if quiet and level != "DEBUG" else level
    logging.basicConfig(level=effective, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load settings once, run the subcommand; user mistakes become one stderr line."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, quiet=args.handler.__name__ not in SERVICES)
        return int(args.handler(args, settings) or 0)
    except UserError as error:
        print(f"dreamcord: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dreamcord: interrupted", file=sys.stderr)
        return 130
