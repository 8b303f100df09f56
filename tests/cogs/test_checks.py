"""Whether the channel asked in counts as NSFW: DMs as DM_POLICY says, threads as their parent."""

from __future__ import annotations

import discord
import pytest

from cogs.checks import channel_is_nsfw


class Thread:
    """discord.py's threads answer `is_nsfw()` from their parent channel."""

    def __init__(self, parent_nsfw: bool) -> None:
        self.parent_nsfw = parent_nsfw

    def is_nsfw(self) -> bool:
        return self.parent_nsfw


@pytest.mark.parametrize(("policy", "nsfw"), [("off", False), ("sfw", False), ("nsfw", True)])
def test_a_dm_is_nsfw_only_when_the_dm_policy_says_so(policy: str, nsfw: bool) -> None:
    dm = discord.DMChannel.__new__(discord.DMChannel)  # its type is all that is read
    assert channel_is_nsfw(dm, policy) is nsfw
    uncached = discord.PartialMessageable(None, 1, type=discord.ChannelType.private)  # type: ignore[arg-type]
    assert channel_is_nsfw(uncached, policy) is nsfw


def test_channels_threads_and_unknown_channels() -> None:
    assert channel_is_nsfw(Thread(parent_nsfw=True), "off") is True
    assert channel_is_nsfw(Thread(parent_nsfw=False), "nsfw") is False
    assert channel_is_nsfw(None, "nsfw") is False, "unknown: the safe side"
    assert channel_is_nsfw(object(), "nsfw") is False
