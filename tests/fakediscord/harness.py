"""Drive a real discord.py client against the fake server, the way users would.

``run_bot(factory)`` starts the fake server and the client that ``factory(server)`` builds, and
waits until it is ready; ``connect_bot(server, factory)`` does the same on a server that is
already running. The factory points its client at the server (``server.api_url``,
``server.gateway_url``) the way the bot is pointed at any Discord-compatible server: the harness
does not patch discord.py. The yielded :class:`DiscordHarness` plays the users: it sends slash
commands, clicks buttons, submits modals and types into autocomplete, then waits on what the bot
answered. Every wait raises at once with the client task's exception if the client dies, so a
payload mistake fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import discord

from . import error_log, payloads
from .error_log import ErrorLog
from .payloads import Payload
from .ratelimits import RateLimitRule
from .records import InteractionRecord, RecordedRequest, StoredMessage
from .scene import FakeChannel, FakeMember, FakeUser, Scene
from .server import DEFAULT_TOKEN, FakeDiscord
from .user_input import ModalValues, UserInput, modal_submit_data

ClientT = TypeVar("ClientT", bound=discord.Client)
#: Builds the client under test, pointed at the server it is given.
ClientFactory = Callable[[FakeDiscord], ClientT]

# discord.py waits guild_ready_timeout (2 s) after the last GUILD_CREATE before on_ready; the
# fake sends the only guild at once, so waiting that long is dead time.
GUILD_READY_TIMEOUT = 0.05


class DiscordHarness:
    """The users' side of a conversation with a running bot. Get one from :func:`run_bot`."""

    def __init__(
        self,
        server: FakeDiscord,
        client: discord.Client,
        task: asyncio.Task[None],
        errors: list[logging.LogRecord],
    ) -> None:
        self.server = server
        self.client = client
        self.task = task
        self.errors = errors
        self._input = UserInput(server)
        #: ``wait_until(check, timeout=, what=)``: the server's wait, which fails fast when the
        #: client dies.
        self.wait_until = server.wait_until

    # -------------------------------------------------------------- the world

    @property
    def scene(self) -> Scene:
        return self.server.scene

    @property
    def admin(self) -> FakeMember:
        """A member whose role grants MANAGE_GUILD."""
        return self.scene.admin

    @property
    def alice(self) -> FakeMember:
        return self.scene.alice

    @property
    def bob(self) -> FakeMember:
        return self.scene.bob

    @property
    def general(self) -> FakeChannel:
        return self.scene.general

    @property
    def art(self) -> FakeChannel:
        return self.scene.art

    @property
    def nsfw(self) -> FakeChannel:
        """The age-restricted text channel."""
        return self.scene.nsfw

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def commands(self, *, guild: bool = False) -> list[Payload]:
        """Commands the bot registered (global, or those of the test guild)."""
        return self.server.commands(self.scene.guild_id if guild else None)

    def command(self, name: str) -> Payload:
        """A registered chat-input command by name; raises if the bot never synced it."""
        found = self.server.find_command(name, self.scene.guild_id)
        if found is None:
            raise LookupError(f"/{name} is not registered; registered: {self._command_names()}")
        return found

    def messages(self, channel: FakeChannel | int | None = None) -> list[StoredMessage]:
        return self.server.messages(_channel_id(channel))

    def assert_no_errors(self, *expected: str) -> None:
        """Fail on an ERROR record logged so far (an exception in a command, view, modal or
        the bot's own code) unless an ``expected`` pattern matches it; see ``error_log.check``.
        """
        error_log.check(self.errors, expected)

    # -------------------------------------------------------------- user actions

    async def slash(
        self,
        command: str,
        /,
        *,
        user: FakeMember | FakeUser | None = None,
        channel: FakeChannel | None = None,
        **options: Any,
    ) -> InteractionRecord:
        """Run ``/command`` (``"lora add"`` for a subcommand) with option values.

        Values are checked and typed against the registered command when the bot synced it;
        ``Upload``, members, channels and roles land in ``data.resolved`` as on Discord.
        """
        channel = channel or self.general
        data = self._input.command_data(command, options, focused=None, channel=channel)
        return await self._send(payloads.APPLICATION_COMMAND, data, user=user, channel=channel)

    async def autocomplete(
        self,
        command: str,
        option: str,
        typed: str,
        /,
        *,
        user: FakeMember | FakeUser | None = None,
        channel: FakeChannel | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
        **options: Any,
    ) -> list[Payload]:
        """Type ``typed`` into ``option`` and return the choices the bot suggested."""
        channel = channel or self.general
        values = {**options, option: typed}
        data = self._input.command_data(command, values, focused=option, channel=channel)
        record = await self._send(payloads.AUTOCOMPLETE, data, user=user, channel=channel)
        response = await record.wait_for_response(timeout)
        return response.data.get("choices", [])

    async def click(
        self,
        message: StoredMessage | int,
        target: str,
        /,
        *,
        user: FakeMember | FakeUser | None = None,
    ) -> InteractionRecord:
        """Click the button labelled (or with custom_id) ``target`` on the message as it is now."""
        stored, component = self._component(message, target)
        if component.get("type") != 2 or "custom_id" not in component:
            raise ValueError(f"{target!r} is not a clickable button: {component}")
        data = payloads.component_data(component["custom_id"], 2)
        return await self._send_component(stored, data, user)

    async def select(
        self,
        message: StoredMessage | int,
        target: str,
        values: Sequence[str],
        /,
        *,
        user: FakeMember | FakeUser | None = None,
    ) -> InteractionRecord:
        """Pick ``values`` in a string select (found by custom_id or placeholder-less label)."""
        stored, component = self._component(message, target)
        data = payloads.component_data(component["custom_id"], component["type"], values)
        return await self._send_component(stored, data, user)

    async def submit_modal(
        self,
        source: InteractionRecord,
        values: ModalValues | None = None,
        /,
        *,
        user: FakeMember | FakeUser | None = None,
    ) -> InteractionRecord:
        """Fill in the modal the bot opened in answer to ``source`` and submit it.

        ``values`` maps an input's custom_id to what the user typed; other inputs keep their
        pre-filled value.
        """
        modal = source.modal
        if modal is None:
            raise LookupError(f"interaction {source.id} was not answered with a modal")
        data = modal_submit_data(modal, values or {})
        channel = self.scene.channel(int(source.payload["channel_id"]))
        user = user or self.scene.member(int(source.payload["member"]["user"]["id"]))
        message = source.payload.get("message")
        return await self._send(
            payloads.MODAL_SUBMIT, data, user=user, channel=channel, message=message
        )

    # -------------------------------------------------------------- waiting

    async def wait_for_message(
        self,
        channel: FakeChannel | int | None = None,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> StoredMessage:
        """The first message (in creation order, latest state) in ``channel`` that matches."""

        def check() -> StoredMessage | None:
            for stored in self.server.messages(_channel_id(channel)):
                if predicate is None or predicate(stored):
                    return stored
            return None

        return await self.wait_until(check, timeout=timeout, what="matching message")

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first recorded REST request (past or future) that matches ``predicate``."""
        return await self.server.wait_for_request(predicate, timeout=timeout)

    # -------------------------------------------------------------- faults

    def limit_uploads(self, limit: int) -> None:
        """Files over ``limit`` bytes get 413 / 40005, and later interactions carry ``limit``
        as their ``attachment_size_limit`` (a server without boosts has 10 MiB)."""
        self.server.front_door.upload_limit = limit

    def expire_token(self, interaction: InteractionRecord) -> None:
        """Later webhook calls with this token get 401 / 50027 Invalid Webhook Token."""
        self.server.expire_token(interaction)

    def rate_limit(
        self, pattern: str, count: int = 1, retry_after: float = 0.2, *, is_global: bool = False
    ) -> RateLimitRule:
        """The next ``count`` requests matching ``"METHOD /path-glob"`` get a 429."""
        return self.server.rate_limit(pattern, count, retry_after, is_global=is_global)

    async def drop_gateway(self, code: int = 4000, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Drop the gateway socket and wait until discord.py has resumed the session."""
        session = self.server.session
        assert session is not None
        resumes = session.resumes
        await self.server.drop_gateway(code)
        await self.wait_until(
            lambda: session.resumes > resumes, timeout=timeout, what="the client to resume"
        )

    def gateway_outage(self, code: int = 4000) -> contextlib.AbstractAsyncContextManager[None]:
        """While inside, the client is disconnected; events are replayed when it resumes."""
        return self.server.gateway_outage(code)

    async def wait_resumed(self, resumes: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        session = self.server.session
        assert session is not None
        await self.wait_until(
            lambda: session.resumes >= resumes, timeout=timeout, what="a gateway RESUME"
        )

    # -------------------------------------------------------------- building interactions

    def _member(self, user: FakeMember | FakeUser | None) -> FakeMember:
        if user is None:
            return self.alice
        if isinstance(user, FakeUser):
            return self.scene.member(user.id)
        return user

    def _command_names(self) -> list[str]:
        stores = [self.server.global_commands, self.server.guild_commands.get(self.scene.guild_id)]
        return sorted(name for store in stores if store for (_, name) in store)

    async def _send(
        self,
        interaction_type: int,
        data: Payload,
        *,
        user: FakeMember | FakeUser | None,
        channel: FakeChannel,
        message: Payload | None = None,
    ) -> InteractionRecord:
        member = self._member(user)
        payload = payloads.interaction(
            interaction_id=self.server.new_id(),
            interaction_type=interaction_type,
            token=f"aW50ZXJhY3Rpb246{secrets.token_urlsafe(48)}",
            application_id=self.scene.application_id,
            data=data,
            guild_id=self.scene.guild_id,
            channel=self.scene.channel_payload(channel, for_member=member),
            member_payload=self.scene.member_payload(member, with_permissions=True),
            app_permissions=self.scene.permissions(self.scene.bot_member),
            message_payload=message,
            attachment_size_limit=self.server.front_door.upload_limit,
        )
        self.server.raise_if_watched_task_died()
        record = self.server.register_interaction(payload)
        await asyncio.sleep(0)
        return record

    def _component(
        self, message: StoredMessage | int, target: str
    ) -> tuple[StoredMessage, Payload]:
        stored = self.server.message(message if isinstance(message, int) else message.id)
        if stored.deleted:
            raise LookupError(f"message {stored.id} was deleted")
        component = stored.find_component(target)
        if component.get("disabled"):
            raise ValueError(f"{target!r} is disabled; Discord would not let a user use it")
        return stored, component

    async def _send_component(
        self, stored: StoredMessage, data: Payload, user: FakeMember | FakeUser | None
    ) -> InteractionRecord:
        channel = self.scene.channel(stored.channel_id)
        message = copy.deepcopy(stored.payload)
        return await self._send(
            payloads.MESSAGE_COMPONENT, data, user=user, channel=channel, message=message
        )

    async def wait_until_ready(self, timeout: float) -> None:  # noqa: ASYNC109
        guild_id = self.scene.guild_id
        await self.wait_until(
            lambda: self.client.is_ready() and self.client.get_guild(guild_id) is not None,
            timeout=timeout,
            what="the client to become ready",
        )

    @contextlib.asynccontextmanager
    async def restart(
        self, factory: ClientFactory[ClientT], *, ready_timeout: float = 10.0
    ) -> AsyncIterator[ClientT]:
        """Stop the bot and start ``factory(server)``'s client on the same server.

        The server keeps its messages, so a test can click a button of a message the old
        process posted. The new client is closed on exit; the harness then has no live client.
        """
        await _stop_client(self.client, self.task)
        self.server.unwatch(self.task)  # it ended on purpose: not a crash
        client = factory(self.server)
        self.client, self.task = client, _start(self.server, client)
        try:
            await self.wait_until_ready(ready_timeout)
            yield client
        finally:
            crash = await _stop_client(client, self.task)
            self.server.unwatch(self.task)
        if crash is not None:
            raise crash


@contextlib.asynccontextmanager
async def run_bot(
    factory: ClientFactory[ClientT],
    *,
    scene: Scene | None = None,
    token: str = DEFAULT_TOKEN,
    ready_timeout: float = 10.0,
    ack_timeout: float = 3.0,
    error_loggers: Sequence[str] | None = None,
) -> AsyncIterator[DiscordHarness]:
    """Start a fake server and ``factory(server)``'s client on it; stop both on exit."""
    async with (
        FakeDiscord(scene, token=token, ack_timeout=ack_timeout) as server,
        connect_bot(
            server, factory, ready_timeout=ready_timeout, error_loggers=error_loggers
        ) as harness,
    ):
        yield harness


@contextlib.asynccontextmanager
async def connect_bot(
    server: FakeDiscord,
    factory: ClientFactory[ClientT],
    *,
    ready_timeout: float = 10.0,
    error_loggers: Sequence[str] | None = None,
) -> AsyncIterator[DiscordHarness]:
    """Start ``factory(server)``'s client on a running server, and close it on exit.

    ERROR records of ``error_loggers`` (every logger by default) are kept in
    ``harness.errors`` for ``assert_no_errors``. If the client task dies while the test body
    passes, the exit re-raises the client's exception.
    """
    errors = ErrorLog(error_loggers)
    client: discord.Client | None = None
    task: asyncio.Task[None] | None = None
    body_failed = False
    crash: BaseException | None = None
    with errors.attached():
        try:
            client = factory(server)
            task = _start(server, client)
            harness = DiscordHarness(server, client, task, errors.records)
            await harness.wait_until_ready(ready_timeout)
            try:
                yield harness
            except BaseException:
                body_failed = True
                raise
        finally:
            crash = await _stop_client(client, task)
    if crash is not None and not body_failed:
        raise crash


def _start(server: FakeDiscord, client: discord.Client) -> asyncio.Task[None]:
    """Start the client with the server's token; its death ends every wait on the server."""
    client._connection.guild_ready_timeout = min(
        client._connection.guild_ready_timeout, GUILD_READY_TIMEOUT
    )
    task = asyncio.create_task(client.start(server.token), name="fakediscord-client")
    server.watch(task)
    return task


async def _stop_client(
    client: discord.Client | None, task: asyncio.Task[None] | None
) -> BaseException | None:
    """Close the client; return the exception it died of before we asked it to stop."""
    crash = None
    if task is not None and task.done() and not task.cancelled():
        crash = task.exception()
    if client is not None and not client.is_closed():
        await client.close()
    if task is not None and not task.done():
        try:
            await asyncio.wait_for(task, timeout=5.0)
        except (Exception, asyncio.CancelledError):
            logging.getLogger(__name__).debug(
                "client task ended noisily at shutdown", exc_info=True
            )
    return crash


def _channel_id(channel: FakeChannel | int | None) -> int | None:
    return channel.id if isinstance(channel, FakeChannel) else channel
