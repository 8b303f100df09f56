"""What a test asserts on: requests as received, messages as users see them, interactions.

The server fills these in; tests read them. ``InteractionRecord`` also waits on its own answers,
so a test reads ``await ix.wait_for_followup(...)`` instead of polling the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .payloads import FLAG_EPHEMERAL, FLAG_LOADING, Payload

if TYPE_CHECKING:
    from .server import FakeDiscord

CALLBACK_NAMES = {
    1: "PONG",
    4: "CHANNEL_MESSAGE_WITH_SOURCE",
    5: "DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE",
    6: "DEFERRED_UPDATE_MESSAGE",
    7: "UPDATE_MESSAGE",
    8: "APPLICATION_COMMAND_AUTOCOMPLETE_RESULT",
    9: "MODAL",
}


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
