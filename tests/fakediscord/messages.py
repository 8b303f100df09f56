"""Messages: every message the bot created, in its latest state and with its history.

Channel messages, interaction responses and follow-ups all land here, so a test asks one place
what users would see. Each change is also reported (``on_event``) for the gateway to dispatch
MESSAGE_CREATE / UPDATE / DELETE, as Discord does.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import payloads
from .attachments import Cdn
from .errors import UNKNOWN_MESSAGE, DiscordError
from .payloads import FLAG_EPHEMERAL, FLAG_LOADING, Payload, SnowflakeFactory
from .records import InteractionRecord, StoredMessage, UploadedFile
from .scene import Scene
from .validation import check_limits, check_message

MessageEvent = Callable[[str, StoredMessage], None]


class MessageStore:
    """Creates, edits and deletes the bot's messages with Discord's rules."""

    def __init__(
        self, scene: Scene, new_id: SnowflakeFactory, cdn: Cdn, on_event: MessageEvent
    ) -> None:
        self.scene = scene
        self.new_id = new_id
        self.cdn = cdn
        self._on_event = on_event
        self._messages: dict[int, StoredMessage] = {}

    def get(self, message_id: int) -> StoredMessage | None:
        return self._messages.get(int(message_id))

    def all(self, channel_id: int | None = None, *, deleted: bool = False) -> list[StoredMessage]:
        """Messages in creation order (all channels if ``channel_id`` is None)."""
        return [
            m
            for m in self._messages.values()
            if (channel_id is None or m.channel_id == channel_id) and (deleted or not m.deleted)
        ]

    def visible(self, channel_id: int, message_id: int) -> StoredMessage:
        """A message the bot token can see: not deleted, not ephemeral, in that channel."""
        stored = self._messages.get(message_id)
        if stored is None or stored.deleted or stored.ephemeral or stored.channel_id != channel_id:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored

    def create(
        self,
        channel_id: int,
        body: Payload,
        files: list[UploadedFile],
        *,
        flags: int = 0,
        interaction: InteractionRecord | None = None,
        validate: bool = True,
    ) -> StoredMessage:
        """A new message by the bot; ``interaction`` marks a response or follow-up to it."""
        if validate:
            check_message(body, bool(files))
        message = payloads.message(
            self.new_id(),
            channel_id,
            self.scene.client_user_payload(),
            content=body.get("content") or "",
            embeds=[dict(e) for e in body.get("embeds") or []],
            components=list(body.get("components") or []),
            flags=flags | ((body.get("flags") or 0) & ~(FLAG_EPHEMERAL | FLAG_LOADING)),
            nonce=body.get("nonce"),
            **(self._interaction_fields(interaction) if interaction else {}),
        )
        stored = StoredMessage(
            message, interaction_token=interaction.token if interaction else None
        )
        self.cdn.apply(stored, body, files)
        _resolve_embed_urls(stored)
        stored.history.append(_snapshot(stored.payload))
        self._messages[stored.id] = stored
        self._on_event("MESSAGE_CREATE", stored)
        return stored

    def edit(self, stored: StoredMessage, body: Payload, files: list[UploadedFile]) -> None:
        """Apply an edit; an edit also ends a deferred response's "thinking" state."""
        payload = stored.payload
        check_limits(
            {
                key: body.get(key, payload.get(key))
                for key in ("content", "embeds", "components", "flags")
            }
        )
        if "content" in body:
            payload["content"] = body["content"] or ""
        if "embeds" in body:
            payload["embeds"] = [dict(e) for e in body["embeds"] or []]
        if "components" in body:
            payload["components"] = list(body["components"] or [])
        self.cdn.apply(stored, body, files)
        _resolve_embed_urls(stored)
        payload["flags"] &= ~FLAG_LOADING
        payload["edited_timestamp"] = payloads.iso_timestamp()
        stored.history.append(_snapshot(payload))
        self._on_event("MESSAGE_UPDATE", stored)

    def delete(self, stored: StoredMessage) -> None:
        stored.deleted = True
        self._on_event("MESSAGE_DELETE", stored)

    def _interaction_fields(self, interaction: InteractionRecord) -> Payload:
        who = interaction.payload.get("member") or interaction.payload
        return {
            "webhook_id": self.scene.application_id,
            "application_id": self.scene.application_id,
            "interaction_metadata": payloads.interaction_metadata(
                interaction.id, interaction.type, who["user"], self.scene.guild_id
            ),
            "message_type": payloads.MESSAGE_CHAT_INPUT_COMMAND
            if interaction.type == payloads.APPLICATION_COMMAND
            else payloads.MESSAGE_DEFAULT,
        }


def _snapshot(payload: Payload) -> Payload:
    return json.loads(json.dumps(payload))


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
