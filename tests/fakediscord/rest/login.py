"""What discord.py asks at login: the bot user, its application, and where the gateway is."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from .. import payloads
from ..scene import Scene
from .front_door import API_PREFIX, json_response


class LoginRoutes:
    """``/users/@me``, ``/oauth2/applications/@me`` and ``/gateway`` (also ``/gateway/bot``)."""

    def __init__(self, scene: Scene, gateway_url: Callable[[], str]) -> None:
        self.scene = scene
        self._gateway_url = gateway_url

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(API_PREFIX + "/users/@me", self._get_me)
        router.add_get(API_PREFIX + "/oauth2/applications/@me", self._get_application)
        router.add_get(API_PREFIX + "/applications/@me", self._get_application)
        router.add_get(API_PREFIX + "/gateway", self._get_gateway)
        router.add_get(API_PREFIX + "/gateway/bot", self._get_gateway)

    async def _get_me(self, request: web.Request) -> web.Response:
        return json_response(self.scene.client_user_payload())

    async def _get_application(self, request: web.Request) -> web.Response:
        app = payloads.application(
            self.scene.application_id,
            self.scene.bot.username,
            owner=self.scene.owner.payload(),
            bot=self.scene.bot.payload(),
        )
        return json_response(app)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self._gateway_url().rstrip("/"),
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )
