"""The fake Discord as a pytest plugin: a server fixture, a connected bot, and an error check.

Enable it with ``pytest_plugins = ["tests.fakediscord.plugin"]`` in the root ``conftest.py``,
then override ``discord_bot_factory`` with a function that builds your client pointed at the
server it is given. ``discord`` is then a :class:`DiscordHarness` whose bot is ready, and the
test fails afterwards if anything logged an ERROR record it did not declare with
``@pytest.mark.expected_errors("regex", reason="why")``. See README.md beside this file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import discord as discord_py
import pytest
import pytest_asyncio

from .harness import ClientFactory, DiscordHarness, connect_bot
from .server import FakeDiscord

MARKER = "expected_errors"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*patterns, reason): ERROR log records matching these regular expressions "
        "are what the test provokes; each pattern must match at least one record",
    )


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A running fake Discord server with the default scene (one guild, three members)."""
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def discord_bot_factory() -> ClientFactory[discord_py.Client]:
    """Override this: return ``factory(server) -> client``, the client pointed at ``server``."""
    raise pytest.UsageError(
        "the discord fixture needs a discord_bot_factory fixture that builds your client"
    )


@pytest.fixture
def discord_error_loggers() -> Sequence[str] | None:
    """Loggers whose ERROR records fail a test; ``None`` (the default) watches every logger."""
    return None


@pytest_asyncio.fixture
async def discord(
    request: pytest.FixtureRequest,
    fake_discord: FakeDiscord,
    discord_bot_factory: ClientFactory[discord_py.Client],
    discord_error_loggers: Sequence[str] | None,
) -> AsyncIterator[DiscordHarness]:
    """The bot from ``discord_bot_factory``, ready on ``fake_discord``, and the users' side.

    After the test (and the bot's shutdown) every ERROR record must match an
    ``expected_errors`` pattern, and every pattern must have matched.
    """
    expected = expected_errors(request.node)
    async with connect_bot(
        fake_discord, discord_bot_factory, error_loggers=discord_error_loggers
    ) as harness:
        yield harness
    harness.assert_no_errors(*expected)


def expected_errors(item: pytest.Item) -> tuple[str, ...]:
    """The patterns of a test's ``expected_errors`` markers; each must give its reason."""
    patterns: list[str] = []
    for marker in item.iter_markers(MARKER):
        if not marker.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: {MARKER} needs reason='why it is expected'")
        patterns += marker.args
    return tuple(patterns)
