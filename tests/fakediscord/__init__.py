"""A local Discord-compatible server and harness for end-to-end tests of discord.py bots.

Start a bot against it and act as its users::

    from tests.fakediscord import Upload, run_bot

    async def test_imagine_replies() -> None:
        async with run_bot(make_bot) as fake:
            ix = await fake.slash("imagine", prompt="a fox", user=fake.alice)
            await ix.wait_for_response()
            assert ix.ack_latency < 3
            grid = await ix.wait_for_followup(lambda m: bool(m.attachments))
            await fake.click(grid, "U1")

``run_bot`` patches discord.py's REST base and gateway URL for the duration, so run one at a
time per process. ``FakeDiscord`` alone (``async with FakeDiscord() as server``) serves
benchmarks that drive REST or the gateway themselves. Modules: ``payloads`` (complete payload
builders), ``scene`` (the guild, channels, roles and members), ``server`` (the aiohttp app and
its stores), ``harness`` (the users' side).
"""

from .harness import DiscordHarness, Upload, run_bot
from .scene import FakeChannel, FakeMember, FakeRole, FakeUser, Scene, default_scene
from .server import (
    CallbackRecord,
    ClientStopped,
    FakeDiscord,
    InteractionRecord,
    RateLimitRule,
    RecordedRequest,
    StoredMessage,
)

__all__ = [
    "CallbackRecord",
    "ClientStopped",
    "DiscordHarness",
    "FakeChannel",
    "FakeDiscord",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "InteractionRecord",
    "RateLimitRule",
    "RecordedRequest",
    "Scene",
    "StoredMessage",
    "Upload",
    "default_scene",
    "run_bot",
]
