"""The gateway: the websocket discord.py connects to, its sessions, and the events sent on it.

It speaks the handshake discord.md describes (HELLO, IDENTIFY, heartbeats, READY then
GUILD_CREATE), keeps a per-session event log so a RESUME replays what the client missed, and
lets a test break the connection on purpose (drop, outage, RECONNECT, INVALID_SESSION).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import payloads
from .payloads import Payload
from .records import StoredMessage
from .scene import FakeMember, Scene

GATEWAY_PATH = "/gateway-ws/"
RESUME_GATEWAY_PATH = "/gateway-ws/resume/"
HEARTBEAT_INTERVAL_MS = 41_250

GUILDS_INTENT = 1 << 0
GUILD_MESSAGES_INTENT = 1 << 9


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


class Gateway:
    """Sessions, connections and dispatch; ``notify`` is called after every frame."""

    def __init__(
        self,
        scene: Scene,
        token: str,
        resume_url: Callable[[], str],
        notify: Callable[[], None],
    ) -> None:
        self.scene = scene
        self.token = token
        self._resume_url = resume_url
        self._notify = notify
        self.connections: list[GatewayConnection] = []
        self.received: list[Payload] = []
        self.session: GatewaySession | None = None  # the latest identified one
        self._sessions: dict[str, GatewaySession] = {}
        self._open = asyncio.Event()
        self._open.set()
        self._pumps: set[asyncio.Task[None]] = set()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(GATEWAY_PATH, self._serve)
        router.add_get(RESUME_GATEWAY_PATH, self._serve)

    async def close(self) -> None:
        self._open.set()
        for connection in self.connections:
            if not connection.ws.closed:
                await connection.ws.close(code=1001, message=b"fakediscord shutting down")
        for pump in list(self._pumps):
            pump.cancel()

    # -------------------------------------------------------------- events

    def dispatch(self, event: str, data: Payload) -> int:
        """Send a DISPATCH (op 0) now, or log it for RESUME replay if the client is away."""
        session = self._require_session()
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.log.append(frame)
        if session.connection is not None:
            session.connection.send(frame)
        self._notify()
        return session.seq

    def message_event(self, event: str, stored: StoredMessage) -> None:
        """MESSAGE_CREATE / UPDATE / DELETE, for a client that asked for guild messages."""
        session = self.session
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

    # -------------------------------------------------------------- faults

    async def drop(self, code: int = 4000) -> None:
        """Close the client's socket; 4000 ("unknown error") makes discord.py RESUME."""
        session = self._require_session()
        connection, session.connection = session.connection, None
        if connection is not None:
            connection.outbox.put_nowait(None)
            await connection.ws.close(code=code, message=b"fakediscord: dropped on purpose")

    @contextlib.asynccontextmanager
    async def outage(self, code: int = 4000) -> AsyncIterator[None]:
        """Drop the socket and hold reconnects until the block ends."""
        self._open.clear()
        try:
            await self.drop(code)
            yield
        finally:
            self._open.set()

    def send_op(self, op: int, data: Any = None) -> None:
        """A control frame (7 RECONNECT, 9 INVALID_SESSION) on the live connection, if any."""
        connection = self._require_session().connection
        if connection is not None:
            connection.send({"op": op, "d": data, "s": None, "t": None})

    # -------------------------------------------------------------- the socket

    def _require_session(self) -> GatewaySession:
        if self.session is None:
            raise RuntimeError("no gateway session: has a client connected and identified?")
        return self.session

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = GatewayConnection(
            ws, request.path, dict(request.query), asyncio.get_running_loop().time()
        )
        self.connections.append(connection)
        pump = asyncio.create_task(_pump(connection))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        try:
            await self._open.wait()  # a test's outage holds reconnects here
            if ws.closed:
                return ws
            connection.send({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                self.received.append(frame)
                await self._on_frame(connection, frame)
        finally:
            connection.close_code = ws.close_code
            session = connection.session
            if session is not None and session.connection is connection:
                session.connection = None
            connection.outbox.put_nowait(None)
            self._notify()
        return ws

    async def _on_frame(self, connection: GatewayConnection, frame: Payload) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            connection.send({"op": 11, "d": None, "s": None, "t": None})
        elif op in (2, 6) and data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        elif op == 2:
            self._identify(connection, int(data.get("intents") or 0))
        elif op == 6:
            self._resume(connection, data.get("session_id"), data.get("seq"))
        elif op == 8:
            self._send_member_chunk(data)
        self._notify()

    def _identify(self, connection: GatewayConnection, intents: int) -> None:
        session = GatewaySession(secrets.token_hex(16), intents, connection=connection)
        connection.session = session
        self._sessions[session.id] = session
        self.session = session
        self.dispatch(
            "READY",
            payloads.ready(
                session_id=session.id,
                resume_gateway_url=self._resume_url(),
                bot=self.scene.client_user_payload(),
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
        self.session = session
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


async def _pump(connection: GatewayConnection) -> None:
    # One writer per socket keeps frames in sequence order.
    while (frame := await connection.outbox.get()) is not None:
        if connection.ws.closed:
            return
        try:
            await connection.ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            return
