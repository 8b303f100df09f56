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

``make_bot(server)`` builds the client pointed at ``server.api_url`` and ``server.gateway_url``.
As a pytest plugin (``plugin``) the same comes as fixtures: ``fake_discord``, ``discord`` and
the ``expected_errors`` marker. ``FakeDiscord`` alone (``async with FakeDiscord() as server``)
serves tests and benchmarks that drive REST or the gateway themselves. README.md beside this
file lists the modules, what the fake supports and what it does not.
"""

from .harness import DiscordHarness, connect_bot, run_bot
from .ratelimits import RateLimitRule
from .records import CallbackRecord, InteractionRecord, RecordedRequest, StoredMessage
from .scene import FakeChannel, FakeMember, FakeRole, FakeUser, Scene, default_scene
from .server import FakeDiscord
from .user_input import Upload
from .waiting import ClientStopped

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
    "connect_bot",
    "default_scene",
    "run_bot",
]
