"""What the cogs know of the bot: the `App` it opened, and the presenter that shows jobs.

`bot.discord_bot.DreamcordBot` is this client; the cogs type their interactions with it
(`discord.Interaction[DreamcordClient]`), so they need nothing else from `bot/`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord.ext import commands

if TYPE_CHECKING:
    from bot.app import App
    from cogs.presenter import DiscordPresenter


class DreamcordClient(commands.Bot):
    """A `commands.Bot` with the App (after `setup_hook`) and the Discord presenter."""

    presenter: DiscordPresenter

    @property
    def app(self) -> App:
        raise NotImplementedError
