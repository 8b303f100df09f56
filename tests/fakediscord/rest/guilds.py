"""The guild as REST sees it: the guild itself, its channels, roles and members (read only)."""

from __future__ import annotations

from aiohttp import web

from ..errors import UNKNOWN_GUILD, UNKNOWN_MEMBER, DiscordError
from ..scene import Scene
from .front_door import API_PREFIX, json_response


def check_guild(scene: Scene, request: web.Request) -> None:
    """404 / 10004 unless the url names the scene's one guild."""
    if int(request.match_info["guild_id"]) != scene.guild_id:
        raise DiscordError(404, UNKNOWN_GUILD, "Unknown Guild")


class GuildRoutes:
    """``/guilds/{id}`` and its ``channels``, ``roles`` and ``members/{user}``."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene

    def add_routes(self, router: web.UrlDispatcher) -> None:
        guild = API_PREFIX + "/guilds/{guild_id}"
        router.add_get(guild, self._get_guild)
        router.add_get(guild + "/channels", self._get_channels)
        router.add_get(guild + "/roles", self._get_roles)
        router.add_get(guild + "/members/{user_id}", self._get_member)

    async def _get_guild(self, request: web.Request) -> web.Response:
        check_guild(self.scene, request)
        guild = self.scene.guild_payload()
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            guild.pop(key)
        return json_response(guild)

    async def _get_channels(self, request: web.Request) -> web.Response:
        check_guild(self.scene, request)
        return json_response([c.payload(self.scene.guild_id) for c in self.scene.channels])

    async def _get_roles(self, request: web.Request) -> web.Response:
        check_guild(self.scene, request)
        return json_response([r.payload() for r in self.scene.roles])

    async def _get_member(self, request: web.Request) -> web.Response:
        check_guild(self.scene, request)
        try:
            who = self.scene.member(int(request.match_info["user_id"]))
        except KeyError:
            raise DiscordError(404, UNKNOWN_MEMBER, "Unknown Member") from None
        return json_response(self.scene.member_payload(who))
