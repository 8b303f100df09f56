"""Channels and their messages as the bot token sees them: post, list, get, edit, delete.

Ephemeral messages are invisible here (only the interaction's webhook reaches them), and the bot
may edit only its own messages, as on Discord.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import CANNOT_EDIT_OTHERS_MESSAGE, UNKNOWN_CHANNEL, DiscordError
from ..messages import MessageStore
from ..records import StoredMessage
from ..scene import FakeChannel, Scene
from .front_door import API_PREFIX, BODY, FILES, json_response, no_content


class ChannelRoutes:
    """``/channels/{id}``, its ``typing`` and ``messages``, and reactions (accepted, not kept)."""

    def __init__(self, scene: Scene, messages: MessageStore) -> None:
        self.scene = scene
        self.messages = messages

    def add_routes(self, router: web.UrlDispatcher) -> None:
        channel = API_PREFIX + "/channels/{channel_id}"
        router.add_get(channel, self._get_channel)
        router.add_post(channel + "/typing", no_content)
        router.add_get(channel + "/messages", self._list)
        router.add_post(channel + "/messages", self._create)
        message = channel + "/messages/{message_id}"
        router.add_get(message, self._get)
        router.add_patch(message, self._edit)
        router.add_delete(message, self._delete)
        router.add_put(message + "/reactions/{emoji}/@me", no_content)
        router.add_delete(message + "/reactions/{emoji}/@me", no_content)

    def _channel(self, request: web.Request) -> FakeChannel:
        try:
            return self.scene.channel(int(request.match_info["channel_id"]))
        except (KeyError, ValueError):
            raise DiscordError(404, UNKNOWN_CHANNEL, "Unknown Channel") from None

    def _message(self, request: web.Request) -> StoredMessage:
        channel = self._channel(request)
        return self.messages.visible(channel.id, int(request.match_info["message_id"]))

    async def _get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).payload(self.scene.guild_id))

    async def _create(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        stored = self.messages.create(channel.id, request[BODY] or {}, request[FILES])
        return json_response(stored.payload)

    async def _list(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        limit = int(request.query.get("limit", 50))
        visible = [m.payload for m in self.messages.all(channel.id) if not m.ephemeral]
        return json_response(list(reversed(visible))[:limit])

    async def _get(self, request: web.Request) -> web.Response:
        return json_response(self._message(request).payload)

    async def _edit(self, request: web.Request) -> web.Response:
        stored = self._message(request)
        if stored.author_id != self.scene.bot.id:
            raise DiscordError(
                403, CANNOT_EDIT_OTHERS_MESSAGE, "Cannot edit a message authored by another user"
            )
        self.messages.edit(stored, request[BODY] or {}, request[FILES])
        return json_response(stored.payload)

    async def _delete(self, request: web.Request) -> web.Response:
        self.messages.delete(self._message(request))
        return web.Response(status=204)
