"""Interactions: the callback that answers one, and the webhook that follows up on it.

Discord's rules that shape a bot are enforced: one callback per interaction, within
``ack_timeout`` seconds (10062 after), only callback types valid for the interaction type, the
first follow-up after a deferral replaces the "thinking" message, and an expired token answers
401 / 50027.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import payloads
from ..errors import (
    ALREADY_ACKNOWLEDGED,
    INVALID_WEBHOOK_TOKEN,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    DiscordError,
    invalid_form_body,
)
from ..messages import MessageStore
from ..payloads import FLAG_EPHEMERAL, FLAG_LOADING, Payload
from ..records import CallbackRecord, InteractionRecord, StoredMessage, UploadedFile
from ..scene import Scene
from ..validation import check_choices, check_message, check_modal
from .front_door import API_PREFIX, BODY, FILES, json_response

if TYPE_CHECKING:
    from ..server import FakeDiscord

# Callback types Discord accepts per interaction type (a modal submit from a message may edit it).
ALLOWED_CALLBACKS = {
    payloads.APPLICATION_COMMAND: {4, 5, 9},
    payloads.MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
    payloads.AUTOCOMPLETE: {8},
}
MODAL_CALLBACKS = {True: {4, 5, 6, 7}, False: {4, 5}}  # keyed by "submitted from a message"


class InteractionRegistry:
    """Every interaction the harness sent, by id and by token, and the routes that answer them."""

    def __init__(
        self,
        server: FakeDiscord,
        scene: Scene,
        messages: MessageStore,
        dispatch: Callable[[str, Payload], int],
        ack_timeout: float,
    ) -> None:
        self.server = server
        self.scene = scene
        self.messages = messages
        self._dispatch = dispatch
        self.ack_timeout = ack_timeout
        self.by_id: dict[int, InteractionRecord] = {}
        self._by_token: dict[str, InteractionRecord] = {}

    def register(self, payload: Payload) -> InteractionRecord:
        """Remember an interaction (so callbacks can find it) and dispatch INTERACTION_CREATE."""
        record = InteractionRecord(payload, asyncio.get_running_loop().time(), self.server)
        self.by_id[record.id] = record
        self._by_token[record.token] = record
        self._dispatch("INTERACTION_CREATE", payload)
        return record

    def expire_token(self, token: str) -> None:
        self._by_token[token].expired = True

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(
            API_PREFIX + "/interactions/{interaction_id}/{token}/callback", self._callback
        )
        hook = API_PREFIX + "/webhooks/{app_id}/{token}"
        router.add_post(hook, self._followup)
        router.add_get(hook + "/messages/{message_id}", self._webhook_get)
        router.add_patch(hook + "/messages/{message_id}", self._webhook_edit)
        router.add_delete(hook + "/messages/{message_id}", self._webhook_delete)

    # -------------------------------------------------------------- callbacks

    async def _callback(self, request: web.Request) -> web.Response:
        record = self.by_id.get(int(request.match_info["interaction_id"]))
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
        result = self._apply(record, callback_type, data, request[FILES])
        record.callbacks.append(
            CallbackRecord(callback_type, data, request[FILES], now, now - record.sent_at)
        )
        return json_response(result)

    def _apply(
        self,
        record: InteractionRecord,
        callback_type: Any,
        data: Payload,
        files: list[UploadedFile],
    ) -> Payload:
        if record.type == payloads.MODAL_SUBMIT:
            allowed = MODAL_CALLBACKS["message" in record.payload]
        else:
            allowed = ALLOWED_CALLBACKS[record.type]
        if callback_type not in allowed:
            raise invalid_form_body(
                f"callback type {callback_type} for interaction type {record.type}"
            )
        ephemeral = bool((data.get("flags") or 0) & FLAG_EPHEMERAL)
        message: StoredMessage | None = None
        loading = False
        if callback_type in (4, 5):
            loading = callback_type == 5
            flags = (FLAG_EPHEMERAL if ephemeral else 0) | (FLAG_LOADING if loading else 0)
            message = self.messages.create(
                int(record.payload["channel_id"]),
                {} if loading else data,
                [] if loading else files,
                flags=flags,
                interaction=record,
                validate=not loading,
            )
            record.original_message_id = message.id
        elif callback_type in (6, 7):
            target = self.messages.get(int(record.payload["message"]["id"]))
            if target is None or target.deleted:
                raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
            target.interaction_token = record.token
            record.original_message_id = target.id
            ephemeral = target.ephemeral
            if callback_type == 7:
                self.messages.edit(target, data, files)
                message = target
        elif callback_type == 9:
            check_modal(data)
        elif callback_type == 8:
            check_choices(data.get("choices") or [])
        return payloads.interaction_callback(
            interaction_id=record.id,
            interaction_type=record.type,
            callback_type=callback_type,
            message_payload=message.payload if message else None,
            loading=loading,
            ephemeral=ephemeral,
        )

    # -------------------------------------------------------------- webhooks

    def _for_token(self, request: web.Request) -> InteractionRecord:
        record = self._by_token.get(request.match_info["token"])
        if request.match_info["app_id"] != str(self.scene.application_id):
            record = None
        if record is None:
            raise DiscordError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        if record.expired:
            raise DiscordError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        return record

    def _webhook_message(self, request: web.Request) -> StoredMessage:
        record = self._for_token(request)
        raw_id = request.match_info["message_id"]
        message_id = record.original_message_id if raw_id == "@original" else int(raw_id)
        allowed = {record.original_message_id, *record.followup_ids}
        stored = self.messages.get(message_id) if message_id in allowed else None
        if stored is None or stored.deleted:
            raise DiscordError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return stored

    async def _followup(self, request: web.Request) -> web.StreamResponse:
        record = self._for_token(request)
        if not record.callbacks:
            raise DiscordError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        body, files = request[BODY] or {}, request[FILES]
        original = record.original
        if original is not None and original.loading and not original.deleted:
            # The first follow-up after a deferral replaces "<bot> is thinking...".
            check_message(body, bool(files))
            self.messages.edit(original, body, files)
            record.followup_replaced_original = True
            stored = original
        else:
            ephemeral = bool((body.get("flags") or 0) & FLAG_EPHEMERAL)
            stored = self.messages.create(
                int(record.payload["channel_id"]),
                body,
                files,
                flags=FLAG_EPHEMERAL if ephemeral else 0,
                interaction=record,
            )
            record.followup_ids.append(stored.id)
        if request.query.get("wait") in ("1", "true", "True"):
            return json_response(stored.payload)
        return web.Response(status=204)

    async def _webhook_get(self, request: web.Request) -> web.Response:
        return json_response(self._webhook_message(request).payload)

    async def _webhook_edit(self, request: web.Request) -> web.Response:
        stored = self._webhook_message(request)
        self.messages.edit(stored, request[BODY] or {}, request[FILES])
        return json_response(stored.payload)

    async def _webhook_delete(self, request: web.Request) -> web.Response:
        self.messages.delete(self._webhook_message(request))
        return web.Response(status=204)
