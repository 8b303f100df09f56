"""Application commands: what the bot synced, globally and per guild, checked as Discord does.

The harness reads the registered schema to type a test's option values, so a command the bot
never synced, or an option it misnamed, fails the test the way it would fail for a user.
"""

from __future__ import annotations

import re

from aiohttp import web

from ..errors import MISSING_ACCESS, UNKNOWN_COMMAND, DiscordError, invalid_form_body
from ..payloads import Payload, SnowflakeFactory
from ..scene import Scene
from .front_door import API_PREFIX, BODY, json_response
from .guilds import check_guild

CommandStore = dict[tuple[int, str], Payload]  # keyed by (command type, name)


class CommandRegistry:
    """The registered commands and the routes that change them."""

    def __init__(self, scene: Scene, new_id: SnowflakeFactory) -> None:
        self.scene = scene
        self.new_id = new_id
        self.global_commands: CommandStore = {}
        self.guild_commands: dict[int, CommandStore] = {}
        self.syncs = 0  # bulk overwrites (``tree.sync()``) seen

    def listed(self, guild_id: int | None = None) -> list[Payload]:
        """Registered commands: global ones, or those of one guild."""
        store = self.global_commands if guild_id is None else self.guild_commands.get(guild_id, {})
        return list(store.values())

    def find(self, name: str, guild_id: int | None = None) -> Payload | None:
        """A chat-input command as Discord would resolve it (guild commands first)."""
        stores = [self.guild_commands.get(guild_id, {})] if guild_id else []
        stores.append(self.global_commands)
        for store in stores:
            if (1, name) in store:
                return store[(1, name)]
        return None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for prefix in ("/applications/{app_id}", "/applications/{app_id}/guilds/{guild_id}"):
            commands = API_PREFIX + prefix + "/commands"
            router.add_get(commands, self._list)
            router.add_put(commands, self._put)
            router.add_post(commands, self._upsert)
            router.add_get(commands + "/{command_id}", self._get)
            router.add_patch(commands + "/{command_id}", self._edit)
            router.add_delete(commands + "/{command_id}", self._delete)

    def _store(self, request: web.Request) -> CommandStore:
        if int(request.match_info["app_id"]) != self.scene.application_id:
            raise DiscordError(403, MISSING_ACCESS, "Missing Access")
        if "guild_id" not in request.match_info:
            return self.global_commands
        check_guild(self.scene, request)
        return self.guild_commands.setdefault(self.scene.guild_id, {})

    def _guild_id(self, request: web.Request) -> int | None:
        return self.scene.guild_id if "guild_id" in request.match_info else None

    def _make(self, data: Payload, store: CommandStore, guild_id: int | None) -> Payload:
        name = data.get("name", "")
        command_type = data.get("type", 1)
        if not re.fullmatch(r"[-_\w]{1,32}", name) or (command_type == 1 and name != name.lower()):
            raise invalid_form_body(f"name {name!r}")
        if command_type == 1 and not 1 <= len(data.get("description", "")) <= 100:
            raise invalid_form_body(f"{name} description")
        if len(data.get("options", [])) > 25:
            raise invalid_form_body(f"{name} has >25 options")
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

    def _by_id(self, request: web.Request) -> tuple[tuple[int, str], Payload]:
        for key, command in self._store(request).items():
            if command["id"] == request.match_info["command_id"]:
                return key, command
        raise DiscordError(404, UNKNOWN_COMMAND, "Unknown application command")

    async def _list(self, request: web.Request) -> web.Response:
        return json_response(list(self._store(request).values()))

    async def _put(self, request: web.Request) -> web.Response:
        store = self._store(request)
        guild_id = self._guild_id(request)
        commands = [self._make(c, store, guild_id) for c in request[BODY] or []]
        store.clear()
        store.update({(c["type"], c["name"]): c for c in commands})
        self.syncs += 1
        return json_response(commands)

    async def _upsert(self, request: web.Request) -> web.Response:
        store = self._store(request)
        command = self._make(request[BODY], store, self._guild_id(request))
        created = (command["type"], command["name"]) not in store
        store[(command["type"], command["name"])] = command
        return json_response(command, 201 if created else 200)

    async def _get(self, request: web.Request) -> web.Response:
        return json_response(self._by_id(request)[1])

    async def _edit(self, request: web.Request) -> web.Response:
        _, command = self._by_id(request)
        command.update(request[BODY] or {})
        return json_response(command)

    async def _delete(self, request: web.Request) -> web.Response:
        key, _ = self._by_id(request)
        del self._store(request)[key]
        return web.Response(status=204)
