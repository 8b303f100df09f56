"""Discord takes at most 25 options per slash command (more and the command sync fails)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from discord import app_commands
from discord.ext import commands

import cogs

MAX_OPTIONS = 25
"""Discord's limit on a command's options (its API documentation, Application Commands)."""


def _commands() -> list[app_commands.Command]:
    found = []
    for info in pkgutil.walk_packages(cogs.__path__, "cogs."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, commands.Cog):
                for command in value.__cog_app_commands__:
                    if isinstance(command, app_commands.Command):
                        found.append(command)
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda command: command.name)
def test_no_command_has_more_options_than_discord_takes(command: app_commands.Command) -> None:
    assert len(command.parameters) <= MAX_OPTIONS


def test_blend_takes_two_pictures_and_up_to_three_more() -> None:
    (blend,) = [command for command in _commands() if command.name == "blend"]
    required = [p.name for p in blend.parameters if p.required]
    assert required == ["image1", "image2"]
    assert [p.name for p in blend.parameters][:5] == [f"image{n}" for n in range(1, 6)]
