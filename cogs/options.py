"""What several commands offer alike: sampler choices, size suggestions, name autocomplete."""

from __future__ import annotations

from collections.abc import Sequence

from discord import app_commands

from cogs.fitting import CHOICE
from pipeline.samplers import SAMPLER_NAMES, SCHEDULE_NAMES

MAX_CHOICES = 25
"""Discord shows at most 25 choices or autocomplete entries."""
SIZE_SUGGESTIONS = ("512x512", "512x768", "768x512", "2:3", "3:2", "3:4", "4:3", "16:9", "9:16")
SAMPLER_CHOICES = [app_commands.Choice(name=name, value=name) for name in SAMPLER_NAMES]
SCHEDULE_CHOICES = [app_commands.Choice(name=name, value=name) for name in SCHEDULE_NAMES]


def filter_names(names: Sequence[str], typed: str) -> list[app_commands.Choice[str]]:
    """At most 25 names containing `typed` (any case), those starting with it first.

    A name longer than Discord's 100 characters for a choice cannot be offered: it is typed.
    """
    typed = typed.strip().lower()
    hits = [name for name in names if typed in name.lower() and len(name) <= CHOICE]
    hits.sort(key=lambda name: (not name.lower().startswith(typed), name.lower()))
    return [app_commands.Choice(name=name, value=name) for name in hits[:MAX_CHOICES]]


def size_choices(typed: str) -> list[app_commands.Choice[str]]:
    return [
        app_commands.Choice(name=size, value=size)
        for size in SIZE_SUGGESTIONS
        if typed.lower() in size
    ][:MAX_CHOICES]
