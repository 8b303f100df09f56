"""A local Discord-compatible server: REST, gateway websocket and attachment CDN in one aiohttp app.

It implements the slice of Discord a bot built on discord.py 2.7 uses (login, gateway with
RESUME, command sync, interaction callbacks, webhook follow-ups, channel messages, attachments),
keeps the latest state of every message so a test can assert on what users would see, records
every request, and injects faults on demand (429s, expired interaction tokens, dropped gateway).

``FakeDiscord`` only composes the parts and is the one object a test talks to: ``gateway`` (the
websocket), ``rest`` (the API by resource), ``messages``, ``attachments``, ``ratelimits`` and
``waiting`` each do one job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from aiohttp import web

from . import payloads
from .attachments import Cdn
from .gateway import GATEWAY_PATH, RESUME_GATEWAY_PATH, Gateway, GatewayConnection, GatewaySession
from .messages import MessageStore
from .payloads import Payload, SnowflakeFactory
from .ratelimits import RateLimitRule, RateLimits
from .records import InteractionRecord, RecordedRequest, StoredMessage
from .rest.channels import ChannelRoutes
from .rest.commands import CommandRegistry
from .rest.front_door import API_PREFIX, RestFrontDoor, json_response
from .rest.guilds import GuildRoutes
from .rest.interactions import InteractionRegistry
from .rest.login import LoginRoutes
from .scene import Scene, default_scene
from .waiting import Waiter

_log = logging.getLogger(__name__)


DEFAULT_TOKEN = "fake-bot-token"
OP_RECONNECT = 7
OP_INVALID_SESSION = 9


class FakeDiscord(Waiter):
    """The fake Discord: start it, point a discord.py client at it, drive it from a test.

    ``async with FakeDiscord() as server:`` starts it on 127.0.0.1 with an ephemeral port. A
    client reaches it with ``server.api_url`` as ``discord.http.Route.BASE`` and
    ``server.gateway_url`` as ``DiscordWebSocket.DEFAULT_GATEWAY``. It is the ``Waiter`` tests
    wait on (``wait_until``, ``watch``), since every request and frame changes its state.
    """

    def __init__(
        self,
        scene: Scene | None = None,
        *,
        token: str = DEFAULT_TOKEN,
        ack_timeout: float = 3.0,
    ) -> None:
        self.new_id = SnowflakeFactory()
        self.scene = scene or default_scene(self.new_id)
        self.token = token
        super().__init__()
        self.base_url = ""
        self.ratelimits = RateLimits()
        self.front_door = RestFrontDoor(token, self.ratelimits, self.notify)
        self.gateway = Gateway(self.scene, token, lambda: self.resume_gateway_url, self.notify)
        self.cdn = Cdn(self.new_id)
        self.message_store = MessageStore(
            self.scene, self.new_id, self.cdn, self.gateway.message_event
        )
        self.command_registry = CommandRegistry(self.scene, self.new_id)
        self.interaction_registry = InteractionRegistry(
            self, self.scene, self.message_store, self.gateway.dispatch, ack_timeout
        )
        self._runner: web.AppRunner | None = None

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        app = web.Application(
            middlewares=[self.front_door.middleware], client_max_size=64 * 1024**2
        )
        for part in (
            self.gateway,
            self.cdn,
            LoginRoutes(self.scene, lambda: self.gateway_url),
            self.command_registry,
            self.interaction_registry,
            ChannelRoutes(self.scene, self.message_store),
            GuildRoutes(self.scene),
        ):
            part.add_routes(app.router)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", _unknown_route)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.cdn.base_url = self.base_url

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + GATEWAY_PATH

    @property
    def resume_gateway_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + RESUME_GATEWAY_PATH

    # -------------------------------------------------------------- waiting

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first recorded request (past or future) that matches ``predicate``."""

        def check() -> RecordedRequest | None:
            return next((r for r in self.requests if r.status and predicate(r)), None)

        return await self.wait_until(check, timeout=timeout, what="matching request")

    # -------------------------------------------------------------- state for tests

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every API request in arrival order, with the status it was answered with."""
        return self.front_door.requests

    @property
    def interactions(self) -> dict[int, InteractionRecord]:
        return self.interaction_registry.by_id

    @property
    def global_commands(self) -> dict[tuple[int, str], Payload]:
        return self.command_registry.global_commands

    @property
    def guild_commands(self) -> dict[int, dict[tuple[int, str], Payload]]:
        return self.command_registry.guild_commands

    @property
    def command_syncs(self) -> int:
        return self.command_registry.syncs

    @property
    def gateway_connections(self) -> list[GatewayConnection]:
        return self.gateway.connections

    @property
    def gateway_received(self) -> list[Payload]:
        """Every frame the client sent on any gateway socket."""
        return self.gateway.received

    @property
    def session(self) -> GatewaySession | None:
        """The latest identified gateway session."""
        return self.gateway.session

    def message(self, message_id: int) -> StoredMessage:
        stored = self.message_store.get(message_id)
        if stored is None:
            raise KeyError(message_id)
        return stored

    def messages(
        self, channel_id: int | None = None, *, deleted: bool = False
    ) -> list[StoredMessage]:
        """Messages in creation order (all channels if ``channel_id`` is None)."""
        return self.message_store.all(channel_id, deleted=deleted)

    def commands(self, guild_id: int | None = None) -> list[Payload]:
        """Registered commands: global ones, or those of one guild."""
        return self.command_registry.listed(guild_id)

    def find_command(self, name: str, guild_id: int | None = None) -> Payload | None:
        """A chat-input command as Discord would resolve it (guild commands first)."""
        return self.command_registry.find(name, guild_id)

    def cdn_bytes(self, url: str) -> bytes:
        """Bytes behind a CDN url the fake handed out."""
        return self.cdn.bytes_at(url)

    def add_upload(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None = None
    ) -> Payload:
        """Put a file a user "uploaded" (a slash attachment option) on the CDN."""
        attachment = self.cdn.store(channel_id, filename, data, content_type)
        attachment["ephemeral"] = True
        return attachment

    # -------------------------------------------------------------- events and faults

    def dispatch(self, event: str, data: Payload) -> int:
        """Send a gateway DISPATCH now, or log it for RESUME replay if the client is away."""
        return self.gateway.dispatch(event, data)

    def register_interaction(self, payload: Payload) -> InteractionRecord:
        """Remember an interaction (so callbacks can find it) and dispatch INTERACTION_CREATE."""
        return self.interaction_registry.register(payload)

    def rate_limit(
        self, pattern: str, count: int = 1, retry_after: float = 0.2, *, is_global: bool = False
    ) -> RateLimitRule:
        """Answer the next ``count`` requests matching ``pattern`` with 429.

        ``pattern`` is an fnmatch glob over ``"METHOD /path"`` (``"PATCH /channels/*"``) or
        over the path alone; paths omit ``/api/v10``.
        """
        return self.ratelimits.add(pattern, count, retry_after, is_global=is_global)

    def expire_token(self, interaction: InteractionRecord | str) -> None:
        """Make an interaction token invalid, as Discord does after 15 minutes."""
        token = interaction if isinstance(interaction, str) else interaction.token
        self.interaction_registry.expire_token(token)

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the client's gateway socket; 4000 ("unknown error") makes discord.py RESUME."""
        await self.gateway.drop(code)

    def gateway_outage(self, code: int = 4000) -> contextlib.AbstractAsyncContextManager[None]:
        """Drop the gateway and hold reconnects until the block ends.

        Events dispatched inside the block are logged and replayed when the client resumes.
        """
        return self.gateway.outage(code)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, which discord.py answers by reconnecting and resuming."""
        self.gateway.send_op(OP_RECONNECT)

    def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (``False``: the client must IDENTIFY again)."""
        self.gateway.send_op(OP_INVALID_SESSION, resumable)


async def _unknown_route(request: web.Request) -> web.Response:
    _log.warning("fakediscord: unhandled %s %s", request.method, request.path)
    return json_response(payloads.error(0, "404: Not Found"), 404)
