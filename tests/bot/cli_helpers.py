"""Running the `dreamcord` command in-process, as a user would from a shell."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.cli import main


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def dreamcord(capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    """Run `dreamcord ARGS`; argparse's own exits become the exit code too."""
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)
