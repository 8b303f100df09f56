"""A local Discord-compatible server: REST, gateway websocket and attachment CDN in one aiohttp app.

It implements the slice of Discord a bot built on discord.py 2.7 uses (login, gateway with
RESUME, command sync, interaction callbacks, webhook follow-ups, channel messages, attachments),
keeps the latest state of every message so a test can assert on what users would see, records
every request, and injects faults on demand (429s, expired interaction tokens, dropped gateway).

It behaves like Discord where a bot could tell the difference: JSON bodies carry exactly
``Content-Type: application/json``, errors carry Discord's numeric codes (10062, 40060, 50027,
50006...), the first follow-up after a deferral replaces the "thinking" message, ephemeral
messages are invisible to the bot token, and interactions must be acknowledged in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from . import payloads
from .payloads import (
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    Payload,
    SnowflakeFactory,
)
from .scene import FakeMember, Scene, default_scene

_log = logging.getLogger(__name__)

T = TypeVar("T")

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway-ws/"
RESUME_GATEWAY_PATH = "/gateway-ws/resume/"
HEARTBEAT_INTERVAL_MS = 41_250
POLL_INTERVAL = 0.05

# Parsed request bodies, stored on the request by the middleware for the handlers.
BODY = web.RequestKey("fakediscord_body", Any)
FILES = web.RequestKey("fakediscord_files", list["UploadedFile"])

# Discord JSON error codes the fake returns.
UNKNOWN_CHANNEL = 10003
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
UNKNOWN_COMMAND = 10063
CANNOT_EDIT_OTHERS_MESSAGE = 50005
EMPTY_MESSAGE = 50006
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035
ALREADY_ACKNOWLEDGED = 40060

GUILDS_INTENT = 1 << 0
GUILD_MESSAGES_INTENT = 1 << 9

CALLBACK_NAMES = {
    1: "PONG",
    4: "CHANNEL_MESSAGE_WITH_SOURCE",
    5: "DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE",
    6: "DEFERRED_UPDATE_MESSAGE",
    7: "UPDATE_MESSAGE",
    8: "APPLICATION_COMMAND_AUTOCOMPLETE_RESULT",
    9: "MODAL",
}


class ClientStopped(RuntimeError):
    """The watched client task ended without an exception while a test was still waiting."""


class DiscordError(Exception):
    """Raised inside a handler to answer with Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes

    @property
    def index(self) -> int | None:
        match = re.fullmatch(r"files\[(\d+)\]", self.field)
        return int(match.group(1)) if match else None


@dataclass
class RecordedRequest:
    """A request as the fake received it; ``path`` omits the ``/api/v10`` prefix."""

    method: str
    path: str
    route: str
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    at: float
    status: int = 0

    @property
    def key(self) -> str:
        """``"PATCH /channels/1/messages/2"``, the string rate-limit patterns match."""
        return f"{self.method} {self.path}"


@dataclass
class CallbackRecord:
    """One interaction callback (``POST /interactions/{id}/{token}/callback``)."""

    type: int
    data: Payload
    files: list[UploadedFile]
    at: float
    latency: float

    @property
    def name(self) -> str:
        return CALLBACK_NAMES.get(self.type, str(self.type))


@dataclass
class StoredMessage:
    """The latest state of a message plus every earlier state, as users would have seen them."""

    payload: Payload
    files: dict[str, bytes] = field(default_factory=dict)
    history: list[Payload] = field(default_factory=list)
    deleted: bool = False
    interaction_token: str | None = None

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def channel_id(self) -> int:
        return int(self.payload["channel_id"])

    @property
    def author_id(self) -> int:
        return int(self.payload["author"]["id"])

    @property
    def content(self) -> str:
        return self.payload["content"]

    @property
    def embeds(self) -> list[Payload]:
        return self.payload["embeds"]

    @property
    def components(self) -> list[Payload]:
        return self.payload["components"]

    @property
    def attachments(self) -> list[Payload]:
        return self.payload["attachments"]

    @property
    def flags(self) -> int:
        return self.payload["flags"]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while a deferred response still shows "<bot> is thinking..."."""
        return bool(self.flags & FLAG_LOADING)

    def walk_components(self) -> Iterable[Payload]:
        """Every component, depth first (rows, sections, containers and their children)."""
        stack = list(reversed(self.components))
        while stack:
            component = stack.pop()
            yield component
            children = list(component.get("components", []))
            for key in ("component", "accessory"):
                if isinstance(component.get(key), dict):
                    children.append(component[key])
            stack.extend(reversed(children))

    def buttons(self) -> list[Payload]:
        return [c for c in self.walk_components() if c.get("type") == 2]

    def find_component(self, label_or_custom_id: str) -> Payload:
        """A button or select by its exact label or custom_id."""
        for component in self.walk_components():
            if label_or_custom_id in (component.get("custom_id"), component.get("label")):
                return component
        raise LookupError(
            f"message {self.id} has no component {label_or_custom_id!r}; "
            f"it has {[c.get('label') or c.get('custom_id') for c in self.buttons()]}"
        )

    def attachment_data(self, which: int | str = 0) -> bytes:
        """Bytes of an attachment, by position or file name."""
        if isinstance(which, int):
            attachment = self.attachments[which]
        else:
            attachment = next(a for a in self.attachments if a["filename"] == which)
        return self.files[attachment["id"]]


@dataclass
class InteractionRecord:
    """An interaction the harness sent, and everything the bot answered to it."""

    payload: Payload
    sent_at: float
    server: FakeDiscord
    callbacks: list[CallbackRecord] = field(default_factory=list)
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    expired: bool = False
    #: True when the first follow-up after a deferral replaced the "thinking" message.
    followup_replaced_original: bool = False

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def token(self) -> str:
        return self.payload["token"]

    @property
    def type(self) -> int:
        return self.payload["type"]

    @property
    def response(self) -> CallbackRecord | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def ack_latency(self) -> float | None:
        """Seconds from INTERACTION_CREATE to the first callback (Discord allows 3)."""
        return self.response.latency if self.response else None

    @property
    def original(self) -> StoredMessage | None:
        if self.original_message_id is None:
            return None
        return self.server.message(self.original_message_id)

    @property
    def followups(self) -> list[StoredMessage]:
        return [self.server.message(i) for i in self.followup_ids]

    @property
    def choices(self) -> list[Payload] | None:
        """Autocomplete choices from a type 8 response, if the bot sent one."""
        for callback in self.callbacks:
            if callback.type == 8:
                return callback.data.get("choices", [])
        return None

    @property
    def modal(self) -> Payload | None:
        """The modal (custom_id, title, components) from a type 9 response."""
        for callback in self.callbacks:
            if callback.type == 9:
                return callback.data
        return None

    async def wait_for_response(self, timeout: float = 5.0) -> CallbackRecord:  # noqa: ASYNC109
        """The first callback; raises at once if the bot's client task dies meanwhile."""
        return await self.server.wait_until(
            lambda: self.response, timeout=timeout, what=f"a response to interaction {self.id}"
        )

    async def wait_for_original(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> StoredMessage:
        """The original response message once it exists (and matches ``predicate``)."""

        def check() -> StoredMessage | None:
            original = self.original
            if original is not None and (predicate is None or predicate(original)):
                return original
            return None

        return await self.server.wait_until(check, timeout=timeout, what="the original response")

    async def wait_for_followup(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> StoredMessage:
        """A follow-up message (including one that replaced the deferred "thinking" message)."""

        def check() -> StoredMessage | None:
            candidates = list(self.followups)
            original = self.original
            if original is not None and self.followup_replaced_original:
                candidates.insert(0, original)
            for candidate in candidates:
                if predicate is None or predicate(candidate):
                    return candidate
            return None

        return await self.server.wait_until(check, timeout=timeout, what="a follow-up message")


@dataclass
class RateLimitRule:
    """The next ``remaining`` requests matching ``pattern`` get a 429."""

    pattern: str
    remaining: int
    retry_after: float
    is_global: bool = False
    hits: list[RecordedRequest] = field(default_factory=list)

    def matches(self, method: str, path: str) -> bool:
        if re.match(r"^[A-Z]+ ", self.pattern):
            return fnmatch.fnmatchcase(f"{method} {path}", self.pattern)
        return fnmatch.fnmatchcase(path, self.pattern)


@dataclass
class GatewayConnection:
    """One websocket the client opened, with its own ordered send queue."""

    ws: web.WebSocketResponse
    path: str
    query: dict[str, str]
    opened_at: float
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    session: GatewaySession | None = None
    close_code: int | None = None

    def send(self, frame: Payload) -> None:
        self.outbox.put_nowait(json.dumps(frame))


@dataclass
class GatewaySession:
    """A gateway session: sequence numbers and the event log that RESUME replays from."""

    id: str
    intents: int
    seq: int = 0
    log: list[Payload] = field(default_factory=list)
    connection: GatewayConnection | None = None
    resumes: int = 0


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


class FakeDiscord:
    """The fake Discord: start it, point discord.py at it, drive it from a test.

    ``async with FakeDiscord() as server:`` starts it on 127.0.0.1 with an ephemeral port.
    ``server.api_url`` replaces ``discord.http.Route.BASE`` and ``server.gateway_url`` replaces
    ``DiscordWebSocket.DEFAULT_GATEWAY`` (the harness does both).
    """

    def __init__(
        self,
        scene: Scene | None = None,
        *,
        token: str = "fake-bot-token",
        ack_timeout: float = 3.0,
    ) -> None:
        self.new_id = SnowflakeFactory()
        self.scene = scene or default_scene(self.new_id)
        self.token = token
        self.ack_timeout = ack_timeout
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.gateway_connections: list[GatewayConnection] = []
        self.gateway_received: list[Payload] = []
        self.global_commands: dict[tuple[int, str], Payload] = {}
        self.guild_commands: dict[int, dict[tuple[int, str], Payload]] = {}
        self.command_syncs = 0
        self.interactions: dict[int, InteractionRecord] = {}
        self._by_token: dict[str, InteractionRecord] = {}
        self._messages: dict[int, StoredMessage] = {}
        self._cdn: dict[str, tuple[bytes, str]] = {}
        self._rate_limits: list[RateLimitRule] = []
        self._sessions: dict[str, GatewaySession] = {}
        self._session: GatewaySession | None = None
        self._gateway_open = asyncio.Event()
        self._gateway_open.set()
        self._changed: asyncio.Future[None] | None = None
        self._watched: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(middlewares=[self._api_middleware], client_max_size=64 * 1024**2)
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        self._gateway_open.set()
        for connection in self.gateway_connections:
            if not connection.ws.closed:
                await connection.ws.close(code=1001, message=b"fakediscord shutting down")
        for pump in list(self._pumps):
            pump.cancel()
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

    # ------------------------------------------------------------------ waiting

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Make every wait raise at once with ``task``'s exception if the task dies."""
        self._watched.append(task)

    def raise_if_watched_task_died(self) -> None:
        for task in self._watched:
            if not task.done():
                continue
            if task.cancelled():
                raise ClientStopped("the discord client task was cancelled")
            exc = task.exception()
            if exc is not None:
                raise exc
            raise ClientStopped("the discord client task returned; is the client closed?")

    def notify(self) -> None:
        """Wake every waiter: some state (requests, messages, gateway) changed."""
        future, self._changed = self._changed, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait_until(
        self,
        check: Callable[[], T | None],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        what: str = "a condition",
    ) -> T:
        """Return ``check()`` once it is truthy; fail fast if a watched client task died."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.raise_if_watched_task_died()
            result = check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fakediscord: no {what} within {timeout:.1f}s")
            if self._changed is None:
                self._changed = loop.create_future()
            waiters: set[Awaitable[Any]] = {self._changed, *self._watched}
            # Also poll: some conditions (client readiness, bot-side state) change off-server.
            await asyncio.wait(
                waiters, timeout=min(remaining, POLL_INTERVAL), return_when=asyncio.FIRST_COMPLETED
            )

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

    # ------------------------------------------------------------------ state for tests

    def message(self, message_id: int) -> StoredMessage:
        return self._messages[int(message_id)]

    def messages(
        self, channel_id: int | None = None, *, deleted: bool = False
    ) -> list[StoredMessage]:
        """Messages in creation order (all channels if ``channel_id`` is None)."""
        return [
            m
            for m in self._messages.values()
            if (channel_id is None or m.channel_id == channel_id) and (deleted or not m.deleted)
        ]

    def commands(self, guild_id: int | None = None) -> list[Payload]:
        """Registered commands: global ones, or those of one guild."""
        store = self.global_commands if guild_id is None else self.guild_commands.get(guild_id, {})
        return list(store.values())

    def find_command(self, name: str, guild_id: int | None = None) -> Payload | None:
        """A chat-input command as Discord would resolve it (guild commands first)."""
        stores = [self.guild_commands.get(guild_id, {})] if guild_id else []
        stores.append(self.global_commands)
        for store in stores:
            if (1, name) in store:
                return store[(1, name)]
        return None

    def cdn_bytes(self, url: str) -> bytes:
        """Bytes behind a CDN url the fake handed out."""
        attachment_id = url.split("/cdn/attachments/", 1)[1].split("/")[1]
        return self._cdn[attachment_id][0]

    def add_upload(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None = None
    ) -> Payload:
        """Put a file a user "uploaded" (a slash attachment option) on the CDN."""
        attachment = self._store_attachment(channel_id, filename, data, content_type)
        attachment["ephemeral"] = True
        return attachment

    # ------------------------------------------------------------------ fault injection

    def rate_limit(
        self, pattern: str, count: int = 1, retry_after: float = 0.2, *, is_global: bool = False
    ) -> RateLimitRule:
        """Answer the next ``count`` requests matching ``pattern`` with 429.

        ``pattern`` is an fnmatch glob over ``"METHOD /path"`` (``"PATCH /channels/*"``) or
        over the path alone; paths omit ``/api/v10``.
        """
        rule = RateLimitRule(pattern, count, retry_after, is_global)
        self._rate_limits.append(rule)
        return rule

    def expire_token(self, interaction: InteractionRecord | str) -> None:
        """Make an interaction token invalid, as Discord does after 15 minutes."""
        token = interaction if isinstance(interaction, str) else interaction.token
        self._by_token[token].expired = True

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the client's gateway socket; 4000 ("unknown error") makes discord.py RESUME."""
        session = self._require_session()
        connection, session.connection = session.connection, None
        if connection is not None:
            connection.outbox.put_nowait(None)
            await connection.ws.close(code=code, message=b"fakediscord: dropped on purpose")

    @contextlib.asynccontextmanager
    async def gateway_outage(self, code: int = 4000) -> AsyncIterator[None]:
        """Drop the gateway and hold reconnects until the block ends.

        Events dispatched inside the block are logged and replayed when the client resumes.
        """
        self._gateway_open.clear()
        try:
            await self.drop_gateway(code)
            yield
        finally:
            self._gateway_open.set()

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, which discord.py answers by reconnecting and resuming."""
        connection = self._require_session().connection
        if connection is not None:
            connection.send({"op": 7, "d": None, "s": None, "t": None})

    def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION (``False``: the client must IDENTIFY again)."""
        connection = self._require_session().connection
        if connection is not None:
            connection.send({"op": 9, "d": resumable, "s": None, "t": None})

    # ------------------------------------------------------------------ gateway events

    @property
    def session(self) -> GatewaySession | None:
        """The latest identified gateway session."""
        return self._session

    def _require_session(self) -> GatewaySession:
        if self._session is None:
            raise RuntimeError("no gateway session: has a client connected and identified?")
        return self._session

    def dispatch(self, event: str, data: Payload) -> int:
        """Send a DISPATCH (op 0) now, or log it for RESUME replay if the client is away."""
        session = self._require_session()
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.log.append(frame)
        if session.connection is not None:
            session.connection.send(frame)
        self.notify()
        return session.seq

    def register_interaction(self, payload: Payload) -> InteractionRecord:
        """Remember an interaction (so callbacks can find it) and dispatch INTERACTION_CREATE."""
        record = InteractionRecord(payload, asyncio.get_running_loop().time(), self)
        self.interactions[record.id] = record
        self._by_token[record.token] = record
        self.dispatch("INTERACTION_CREATE", payload)
        return record

    def _dispatch_message_event(self, event: str, stored: StoredMessage) -> None:
        session = self._session
        if session is None or stored.ephemeral or not session.intents & GUILD_MESSAGES_INTENT:
            return
        if event == "MESSAGE_DELETE":
            data = {
                "id": str(stored.id),
                "channel_id": str(stored.channel_id),
                "guild_id": str(self.scene.guild_id),
            }
        else:
            data = {**stored.payload, "guild_id": str(self.scene.guild_id)}
            with contextlib.suppress(KeyError):
                author = self.scene.member(stored.author_id)
                member = self.scene.member_payload(author)
                member.pop("user")
                data["member"] = member
        self.dispatch(event, data)

    # ------------------------------------------------------------------ routing

    def _add_routes(self, app: web.Application) -> None:
        a = API_PREFIX
        r = app.router
        r.add_get(GATEWAY_PATH, self._gateway)
        r.add_get(RESUME_GATEWAY_PATH, self._gateway)
        r.add_get("/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn_get)
        r.add_get(a + "/users/@me", self._get_me)
        r.add_get(a + "/oauth2/applications/@me", self._get_application)
        r.add_get(a + "/applications/@me", self._get_application)
        r.add_get(a + "/gateway", self._get_gateway)
        r.add_get(a + "/gateway/bot", self._get_gateway)
        for prefix in ("/applications/{app_id}", "/applications/{app_id}/guilds/{guild_id}"):
            r.add_get(a + prefix + "/commands", self._list_commands)
            r.add_put(a + prefix + "/commands", self._put_commands)
            r.add_post(a + prefix + "/commands", self._upsert_command)
            r.add_get(a + prefix + "/commands/{command_id}", self._get_command)
            r.add_patch(a + prefix + "/commands/{command_id}", self._edit_command)
            r.add_delete(a + prefix + "/commands/{command_id}", self._delete_command)
        r.add_post(a + "/interactions/{interaction_id}/{token}/callback", self._callback)
        r.add_post(a + "/webhooks/{app_id}/{token}", self._followup)
        hook_message = a + "/webhooks/{app_id}/{token}/messages/{message_id}"
        r.add_get(hook_message, self._webhook_get)
        r.add_patch(hook_message, self._webhook_edit)
        r.add_delete(hook_message, self._webhook_delete)
        r.add_get(a + "/channels/{channel_id}", self._get_channel)
        r.add_post(a + "/channels/{channel_id}/typing", self._no_content)
        r.add_get(a + "/channels/{channel_id}/messages", self._list_messages)
        r.add_post(a + "/channels/{channel_id}/messages", self._create_message)
        channel_message = a + "/channels/{channel_id}/messages/{message_id}"
        r.add_get(channel_message, self._get_message)
        r.add_patch(channel_message, self._edit_message)
        r.add_delete(channel_message, self._delete_message)
        r.add_put(channel_message + "/reactions/{emoji}/@me", self._no_content)
        r.add_delete(channel_message + "/reactions/{emoji}/@me", self._no_content)
        r.add_get(a + "/guilds/{guild_id}", self._get_guild)
        r.add_get(a + "/guilds/{guild_id}/channels", self._get_guild_channels)
        r.add_get(a + "/guilds/{guild_id}/roles", self._get_guild_roles)
        r.add_get(a + "/guilds/{guild_id}/members/{user_id}", self._get_member)
        r.add_route("*", a + "/{tail:.*}", self._unknown_route)

    @staticmethod
    def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        # Exactly "application/json": discord.py parses nothing else (no charset suffix).
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)

    @staticmethod
    def _bucket(method: str, route: str) -> str:
        return hashlib.sha1(f"{method} {route}".encode()).hexdigest()[:16]

    @web.middleware
    async def _api_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        resource = request.match_info.route.resource
        route = resource.canonical[len(API_PREFIX) :] if resource is not None else path
        body, files = await self._read_body(request)
        record = RecordedRequest(
            request.method,
            path,
            route,
            dict(request.query),
            body,
            files,
            asyncio.get_running_loop().time(),
        )
        request[BODY], request[FILES] = body, files
        self.requests.append(record)
        bucket = self._bucket(request.method, route)
        try:
            response = self._rate_limited(record, bucket)
            if response is None:
                self._check_auth(request, path)
                response = await handler(request)
                response.headers.update(
                    {
                        "X-RateLimit-Bucket": bucket,
                        "X-RateLimit-Limit": "50",
                        "X-RateLimit-Remaining": "49",
                        "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
                        "X-RateLimit-Reset-After": "1.000",
                    }
                )
        except DiscordError as exc:
            response = self._json(payloads.error(exc.code, exc.message), exc.status)
        record.status = response.status
        self.notify()
        return response

    def _rate_limited(self, record: RecordedRequest, bucket: str) -> web.Response | None:
        rule = next(
            (
                r
                for r in self._rate_limits
                if r.remaining > 0 and r.matches(record.method, record.path)
            ),
            None,
        )
        if rule is None:
            return None
        rule.remaining -= 1
        rule.hits.append(record)
        body = {
            "message": "You are being rate limited.",
            "retry_after": rule.retry_after,
            "global": rule.is_global,
        }
        headers = {
            # discord.py treats a 429 without Via as a Cloudflare ban and gives up.
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(rule.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Scope": "global" if rule.is_global else "user",
        }
        if rule.is_global:
            headers["X-RateLimit-Global"] = "true"
        return self._json(body, 429, headers)

    def _check_auth(self, request: web.Request, path: str) -> None:
        # Interaction callbacks and webhook calls authenticate by the token in the URL.
        if path.startswith(("/interactions/", "/webhooks/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
        if not request.can_read_body:
            return None, []
        if request.content_type.startswith("multipart/"):
            body: Any = None
            files: list[UploadedFile] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":
                    body = json.loads(data)
                else:
                    files.append(
                        UploadedFile(
                            part.name or "",
                            part.filename or "file",
                            part.headers.get("Content-Type", "application/octet-stream"),
                            bytes(data),
                        )
                    )
            return body, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            return raw.decode(errors="replace"), []

    # ------------------------------------------------------------------ login and guild

    def _bot_payload(self) -> Payload:
        return payloads.client_user(self.scene.bot.id, self.scene.bot.username)

    async def _get_me(self, request: web.Request) -> web.Response:
        return self._json(self._bot_payload())

    async def _get_application(self, request: web.Request) -> web.Response:
        app = payloads.application(
            self.scene.application_id,
            self.scene.bot.username,
            owner=self.scene.owner.payload(),
            bot=self.scene.bot.payload(),
        )
        return self._json(app)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    def _check_guild(self, request: web.Request) -> None:
        if int(request.match_info["guild_id"]) != self.scene.guild_id:
            raise DiscordError(404, 10004, "Unknown Guild")

    async def _get_guild(self, request: web.Request) -> web.Response:
        self._check_guild(request)
        guild = self.scene.guild_payload()
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            guild.pop(key)
        return self._json(guild)

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        self._check_guild(request)
        return self._json([c.payload(self.scene.guild_id) for c in self.scene.channels])

    async def _get_guild_roles(self, request: web.Request) -> web.Response:
        self._check_guild(request)
        return self._json([r.payload() for r in self.scene.roles])

    async def _get_member(self, request: web.Request) -> web.Response:
        self._check_guild(request)
        try:
            who = self.scene.member(int(request.match_info["user_id"]))
        except KeyError:
            raise DiscordError(404, 10007, "Unknown Member") from None
        return self._json(self.scene.member_payload(who))

    async def _get_channel(self, request: web.Request) -> web.Response:
        return self._json(self._channel(request).payload(self.scene.guild_id))

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _unknown_route(self, request: web.Request) -> web.Response:
        _log.warning("fakediscord: unhandled %s %s", request.method, request.path)
        return self._json(payloads.error(0, "404: Not Found"), 404)

    async def _cdn_get(self, request: web.Request) -> web.Response:
        try:
            data, content_type = self._cdn[request.match_info["attachment_id"]]
        except KeyError:
            return web.Response(status=404, text="asset not found")
        return web.Response(body=data, headers={"Content-Type": content_type})

    # ------------------------------------------------------------------ application commands

    def _command_store(self, request: web.Request) -> dict[tuple[int, str], Payload]:
        if int(request.match_info["app_id"]) != self.scene.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return self.global_commands
        self._check_guild(request)
        return self.guild_commands.setdefault(self.scene.guild_id, {})

    def _make_command(
        self, data: Payload, store: dict[tuple[int, str], Payload], guild_id: int | None
    ) -> Payload:
        name = data.get("name", "")
        command_type = data.get("type", 1)
        if not re.fullmatch(r"[-_\w]{1,32}", name) or (command_type == 1 and name != name.lower()):
            raise DiscordError(400, INVALID_FORM_BODY, f"Invalid Form Body: name {name!r}")
        if command_type == 1 and not 1 <= len(data.get("description", "")) <= 100:
            raise DiscordError(400, INVALID_FORM_BODY, f"Invalid Form Body: {name} description")
        if len(data.get("options", [])) > 25:
            raise DiscordError(400, INVALID_FORM_BODY, f"Invalid Form Body: {name} has >25 options")
        previous = store.get((command_type, name))
        command = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            "name_localizations": None,
            "description_localizations": None,
            **data,
            "id": previous["id"] if previous else str(self.new_id()),
            "application_id": str(self.scene.application_id),
            "version": str(self.new_id()),
        }
        if guild_id is not None:
            command["guild_id"] = str(guild_id)
        return command

    async def _list_commands(self, request: web.Request) -> web.Response:
        return self._json(list(self._command_store(request).values()))

    async def _put_commands(self, request: web.Request) -> web.Response:
        store = self._command_store(request)
        guild_id = self.scene.guild_id if "guild_id" in request.match_info else None
        commands = [self._make_command(c, store, guild_id) for c in request[BODY] or []]
        store.clear()
        store.update({(c["type"], c["name"]): c for c in commands})
        self.command_syncs += 1
        return self._json(commands)

    async def _upsert_command(self, request: web.Request) -> web.Response:
        store = self._command_store(request)
        guild_id = self.scene.guild_id if "guild_id" in request.match_info else None
        command = self._make_command(request[BODY], store, guild_id)
        created = (command["type"], command["name"]) not in store
        store[(command["type"], command["name"])] = command
        return self._json(command, 201 if created else 200)

    def _find_command_by_id(self, request: web.Request) -> tuple[tuple[int, str], Payload]:
        store = self._command_store(request)
        for key, command in store.items():
            if command["id"] == request.match_info["command_id"]:
                return key, command
        raise DiscordError(404, UNKNOWN_COMMAND, "Unknown application command")

    async def _get_command(self, request: web.Request) -> web.Response:
        return self._json(self._find_command_by_id(request)[1])

    async def _edit_command(self, request: web.Request) -> web.Response:
        _, command = self._find_command_by_id(request)
        command.update(request[BODY] or {})
        return self._json(command)

    async def _delete_command(self, request: web.Request) -> web.Response:
        key, _ = self._find_command_by_id(request)
        del self._command_store(request)[key]
        return web.Response(status=204)

    # ------------------------------------------------------------------ messages

    def _channel(self, request: web.Request) -> Any:
        try:
            return self.scene.channel(int(request.match_info["channel_id"]))
        except (KeyError, ValueError):
            raise DiscordError(404, UNKNOWN_CHANNEL, "Unknown Channel") from None

    def _store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        description: str | None = None,
    ) -> Payload:
        attachment_id = self.new_id()
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        url = f"{self.base_url}/cdn/attachments/{channel_id}/{attachment_id}/{filename}"
        size = _png_size(data)
        self._cdn[str(attachment_id)] = (data, content_type)
        return payloads.attachment(
            attachment_id,
            filename,
            size=len(data),
            url=url,
            content_type=content_type,
            width=size[0] if size else None,
            height=size[1] if size else None,
            description=description,
        )

    def _apply_attachments(
        self, stored: StoredMessage, body: Payload, files: list[UploadedFile]
    ) -> None:
        """Discord's rules: ``attachments`` lists what stays (old ids) and what is new (index)."""
        existing = {a["id"]: a for a in stored.payload["attachments"]}
        by_index = {f.index: f for f in files}
        used: set[int | None] = set()
        if "attachments" in body:
            result = []
            for entry in body["attachments"] or []:
                entry_id = str(entry.get("id"))
                if entry_id in existing:
                    result.append(existing[entry_id])
                    continue
                upload = by_index.get(int(entry_id)) if entry_id.isdigit() else None
                if upload is None:
                    raise DiscordError(400, INVALID_FORM_BODY, f"Unknown attachment {entry_id}")
                used.add(upload.index)
                result.append(
                    self._new_attachment(
                        stored, upload, entry.get("filename"), entry.get("description")
                    )
                )
        else:
            result = list(existing.values())
        result += [self._new_attachment(stored, f) for f in files if f.index not in used]
        stored.payload["attachments"] = result
        kept = {a["id"] for a in result}
        stored.files = {k: v for k, v in stored.files.items() if k in kept}

    def _new_attachment(
        self,
        stored: StoredMessage,
        upload: UploadedFile,
        filename: str | None = None,
        description: str | None = None,
    ) -> Payload:
        attachment = self._store_attachment(
            stored.channel_id,
            filename or upload.filename,
            upload.data,
            upload.content_type,
            description,
        )
        stored.files[attachment["id"]] = upload.data
        return attachment

    @staticmethod
    def _resolve_embed_urls(stored: StoredMessage) -> None:
        """``attachment://name`` in an embed points at that attachment, as on Discord."""
        urls = {a["filename"]: a["url"] for a in stored.payload["attachments"]}
        for embed in stored.payload["embeds"]:
            embed.setdefault("type", "rich")
            for key in ("image", "thumbnail", "author", "footer"):
                part = embed.get(key)
                if not isinstance(part, dict):
                    continue
                for url_key in ("url", "icon_url"):
                    url = part.get(url_key)
                    name = url.removeprefix("attachment://") if isinstance(url, str) else None
                    if name is not None and name != url and name in urls:
                        part[url_key] = urls[name]
                        part["proxy_" + url_key] = urls[name]

    @staticmethod
    def _validate(body: Payload, has_files: bool) -> None:
        """The checks Discord makes that a bot bug would trip (bad custom_id, empty message...)."""
        content = body.get("content") or ""
        if len(content) > 2000:
            raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: content > 2000")
        embeds = body.get("embeds") or []
        if len(embeds) > 10:
            raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: more than 10 embeds")
        for embed in embeds:
            if len(embed.get("title") or "") > 256 or len(embed.get("description") or "") > 4096:
                raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: embed too long")
            if len(embed.get("fields") or []) > 25:
                raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: > 25 fields")
        components = body.get("components") or []
        if len(components) > 5 and not (body.get("flags") or 0) & (1 << 15):
            raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: more than 5 rows")
        stack = list(components)
        while stack:
            component = stack.pop()
            custom_id = component.get("custom_id")
            if custom_id is not None and not 1 <= len(custom_id) <= 100:
                raise DiscordError(
                    400, INVALID_FORM_BODY, f"Invalid Form Body: custom_id {custom_id!r} length"
                )
            children = component.get("components") or []
            if component.get("type") == 1 and len(children) > 5:
                raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: row > 5 items")
            stack.extend(children)
        if not (content or embeds or components or has_files or body.get("attachments")):
            raise DiscordError(400, EMPTY_MESSAGE, "Cannot send an empty message")

    def _create(
        self,
        channel_id: int,
        body: Payload,
        files: list[UploadedFile],
        *,
        author: Payload,
        flags: int = 0,
        interaction: InteractionRecord | None = None,
        validate: bool = True,
    ) -> StoredMessage:
        if validate:
            self._validate(body, bool(files))
        extra: Payload = {}
        if interaction is not None:
            who = interaction.payload.get("member") or interaction.payload
            extra = {
                "webhook_id": self.scene.application_id,
                "application_id": self.scene.application_id,
                "interaction_metadata": payloads.interaction_metadata(
                    interaction.id, interaction.type, who["user"], self.scene.guild_id
                ),
                "message_type": payloads.MESSAGE_CHAT_INPUT_COMMAND
                if interaction.type == payloads.APPLICATION_COMMAND
                else payloads.MESSAGE_DEFAULT,
            }
        message = payloads.message(
            self.new_id(),
            channel_id,
            author,
            content=body.get("content") or "",
            embeds=[dict(e) for e in body.get("embeds") or []],
            components=list(body.get("components") or []),
            flags=flags | ((body.get("flags") or 0) & ~(FLAG_EPHEMERAL | FLAG_LOADING)),
            nonce=body.get("nonce"),
            **extra,
        )
        stored = StoredMessage(
            message, interaction_token=interaction.token if interaction else None
        )
        self._apply_attachments(stored, body, files)
        self._resolve_embed_urls(stored)
        stored.history.append(json.loads(json.dumps(stored.payload)))
        self._messages[stored.id] = stored
        self._dispatch_message_event("MESSAGE_CREATE", stored)
        return stored

    def _edit(self, stored: StoredMessage, body: Payload, files: list[UploadedFile]) -> None:
        payload = stored.payload
        if "content" in body:
            payload["content"] = body["content"] or ""
        if "embeds" in body:
            payload["embeds"] = [dict(e) for e in body["embeds"] or []]
        if "components" in body:
            payload["components"] = list(body["components"] or [])
        if len(payload["content"]) > 2000:
            raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: content > 2000")
        self._apply_attachments(stored, body, files)
        self._resolve_embed_urls(stored)
        payload["flags"] &= ~FLAG_LOADING
        payload["edited_timestamp"] = payloads.iso_timestamp()
        stored.history.append(json.loads(json.dumps(payload)))
        self._dispatch_message_event("MESSAGE_UPDATE", stored)

    def _delete(self, stored: StoredMessage) -> None:
        stored.deleted = True
        self._dispatch_message_event("MESSAGE_DELETE", stored)

    def _visible_message(self, request: web.Request) -> StoredMessage:
        """A message the bot token can see: not deleted, not ephemeral, in that channel."""
        channel = self._channel(request)
        stored = self._messages.get(int(request.match_info["message_id"]))
        if stored is None or stored.deleted or stored.ephemeral or stored.channel_id != channel.id:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        stored = self._create(
            channel.id, request[BODY] or {}, request[FILES], author=self._bot_payload()
        )
        return self._json(stored.payload)

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        limit = int(request.query.get("limit", 50))
        visible = [m.payload for m in self.messages(channel.id) if not m.ephemeral]
        return self._json(list(reversed(visible))[:limit])

    async def _get_message(self, request: web.Request) -> web.Response:
        return self._json(self._visible_message(request).payload)

    async def _edit_message(self, request: web.Request) -> web.Response:
        stored = self._visible_message(request)
        if stored.author_id != self.scene.bot.id:
            raise DiscordError(
                403, CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user"
            )
        self._edit(stored, request[BODY] or {}, request[FILES])
        return self._json(stored.payload)

    async def _delete_message(self, request: web.Request) -> web.Response:
        self._delete(self._visible_message(request))
        return web.Response(status=204)

    # ------------------------------------------------------------------ interactions

    def _interaction_for_token(self, request: web.Request) -> InteractionRecord:
        record = self._by_token.get(request.match_info["token"])
        if "app_id" in request.match_info and (
            request.match_info["app_id"] != str(self.scene.application_id)
        ):
            record = None
        if record is None:
            raise DiscordError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        if record.expired:
            raise DiscordError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        return record

    async def _callback(self, request: web.Request) -> web.Response:
        record = self.interactions.get(int(request.match_info["interaction_id"]))
        if record is None or record.token != request.match_info["token"]:
            raise DiscordError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if record.expired:
            raise DiscordError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        if record.callbacks:
            raise DiscordError(
                400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged."
            )
        now = asyncio.get_running_loop().time()
        if now - record.sent_at > self.ack_timeout:
            raise DiscordError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        body = request[BODY] or {}
        callback_type = body.get("type")
        data = body.get("data") or {}
        result = self._apply_callback(record, callback_type, data, request[FILES])
        record.callbacks.append(
            CallbackRecord(callback_type, data, request[FILES], now, now - record.sent_at)
        )
        return self._json(result)

    def _apply_callback(
        self,
        record: InteractionRecord,
        callback_type: Any,
        data: Payload,
        files: list[UploadedFile],
    ) -> Payload:
        has_message = "message" in record.payload
        allowed = {
            payloads.APPLICATION_COMMAND: {4, 5, 9},
            payloads.MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
            payloads.AUTOCOMPLETE: {8},
            payloads.MODAL_SUBMIT: {4, 5, 6, 7} if has_message else {4, 5},
        }[record.type]
        if callback_type not in allowed:
            raise DiscordError(
                400,
                INVALID_FORM_BODY,
                f"Invalid Form Body: callback type {callback_type} for interaction type "
                f"{record.type}",
            )
        channel_id = int(record.payload["channel_id"])
        ephemeral = bool((data.get("flags") or 0) & FLAG_EPHEMERAL)
        message: StoredMessage | None = None
        loading = False
        if callback_type in (4, 5):
            loading = callback_type == 5
            flags = (FLAG_EPHEMERAL if ephemeral else 0) | (FLAG_LOADING if loading else 0)
            message = self._create(
                channel_id,
                {} if loading else data,
                [] if loading else files,
                author=self._bot_payload(),
                flags=flags,
                interaction=record,
                validate=not loading,
            )
            record.original_message_id = message.id
        elif callback_type in (6, 7):
            target = self._messages.get(int(record.payload["message"]["id"]))
            if target is None or target.deleted:
                raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
            target.interaction_token = record.token
            record.original_message_id = target.id
            ephemeral = target.ephemeral
            if callback_type == 7:
                self._edit(target, data, files)
                message = target
        elif callback_type == 9:
            if not data.get("custom_id") or not data.get("title") or not data.get("components"):
                raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: modal")
        elif callback_type == 8 and len(data.get("choices") or []) > 25:
            raise DiscordError(400, INVALID_FORM_BODY, "Invalid Form Body: more than 25 choices")
        return payloads.interaction_callback(
            interaction_id=record.id,
            interaction_type=record.type,
            callback_type=callback_type,
            message_payload=message.payload if message else None,
            loading=loading,
            ephemeral=ephemeral,
        )

    def _webhook_message(self, request: web.Request) -> tuple[InteractionRecord, StoredMessage]:
        record = self._interaction_for_token(request)
        raw_id = request.match_info["message_id"]
        message_id = record.original_message_id if raw_id == "@original" else int(raw_id)
        allowed = {record.original_message_id, *record.followup_ids}
        stored = self._messages.get(message_id) if message_id in allowed else None
        if stored is None or stored.deleted:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return record, stored

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        record = self._interaction_for_token(request)
        if not record.callbacks:
            raise DiscordError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        body, files = request[BODY] or {}, request[FILES]
        original = record.original
        if original is not None and original.loading and not original.deleted:
            # The first follow-up after a deferral replaces "<bot> is thinking...".
            self._validate(body, bool(files))
            self._edit(original, body, files)
            record.followup_replaced_original = True
            stored = original
        else:
            ephemeral = bool((body.get("flags") or 0) & FLAG_EPHEMERAL)
            stored = self._create(
                int(record.payload["channel_id"]),
                body,
                files,
                author=self._bot_payload(),
                flags=FLAG_EPHEMERAL if ephemeral else 0,
                interaction=record,
            )
            record.followup_ids.append(stored.id)
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(stored.payload)
        return web.Response(status=204)

    async def _webhook_get(self, request: web.Request) -> web.Response:
        return self._json(self._webhook_message(request)[1].payload)

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        _, stored = self._webhook_message(request)
        self._edit(stored, request[BODY] or {}, request[FILES])
        return self._json(stored.payload)

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        self._delete(self._webhook_message(request)[1])
        return web.Response(status=204)

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(
            ws, request.path, dict(request.query), asyncio.get_running_loop().time()
        )
        self.gateway_connections.append(connection)
        pump = asyncio.create_task(self._pump(connection))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        try:
            await self._gateway_open.wait()  # a test's outage holds reconnects here
            if ws.closed:
                return ws
            connection.send({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.gateway_received.append(frame)
                await self._on_gateway_frame(connection, frame)
        finally:
            connection.close_code = ws.close_code
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
            connection.outbox.put_nowait(None)
            self.notify()
        return ws

    @staticmethod
    async def _pump(connection: GatewayConnection) -> None:
        # One writer per socket keeps frames in sequence order.
        while (frame := await connection.outbox.get()) is not None:
            if connection.ws.closed:
                return
            try:
                await connection.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    async def _on_gateway_frame(self, connection: GatewayConnection, frame: Payload) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            connection.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            if data.get("token") != self.token:
                await connection.ws.close(code=4004, message=b"Authentication failed.")
                return
            self._identify(connection, int(data.get("intents") or 0))
        elif op == 6:
            if data.get("token") != self.token:
                await connection.ws.close(code=4004, message=b"Authentication failed.")
                return
            self._resume(connection, data.get("session_id"), data.get("seq"))
        elif op == 8:
            self._send_member_chunk(data)
        self.notify()

    def _identify(self, connection: GatewayConnection, intents: int) -> None:
        session = GatewaySession(secrets.token_hex(16), intents, connection=connection)
        connection.session = session
        self._sessions[session.id] = session
        self._session = session
        self.dispatch(
            "READY",
            payloads.ready(
                session_id=session.id,
                resume_gateway_url=self.resume_gateway_url,
                bot=self._bot_payload(),
                app_id=self.scene.application_id,
                guild_ids=[self.scene.guild_id],
            ),
        )
        if intents & GUILDS_INTENT:
            self.dispatch("GUILD_CREATE", self.scene.guild_payload())

    def _resume(self, connection: GatewayConnection, session_id: Any, seq: Any) -> None:
        session = self._sessions.get(str(session_id))
        if session is None:
            connection.send({"op": 9, "d": False, "s": None, "t": None})
            return
        if session.connection is not None and session.connection is not connection:
            session.connection.outbox.put_nowait(None)
        for frame in session.log:
            if frame["s"] > (seq or 0):
                connection.send(frame)
        connection.session = session
        session.connection = connection
        session.resumes += 1
        self._session = session
        self.dispatch("RESUMED", {"_trace": ["fakediscord-gateway"]})

    def _send_member_chunk(self, data: Payload) -> None:
        members: list[FakeMember] = list(self.scene.members)
        if data.get("user_ids"):
            wanted = {int(i) for i in data["user_ids"]}
            members = [m for m in members if m.id in wanted]
        elif data.get("query"):
            members = [m for m in members if m.user.username.startswith(data["query"])]
        self.dispatch(
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(self.scene.guild_id),
                "members": [self.scene.member_payload(m) for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "nonce": data.get("nonce"),
            },
        )
