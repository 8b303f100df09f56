"""What a user's action looks like on the wire: the ``data`` of a slash command, an autocomplete
or a modal submission.

Values are typed against the command schema the bot synced, so a misnamed option, a missing
required one or a value outside the choices fails the test the way Discord's client would refuse
it; members, roles, channels and uploads land in ``data.resolved`` as on Discord.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import discord

from . import payloads
from .payloads import Payload
from .scene import FakeChannel, FakeMember, FakeRole, FakeUser
from .server import FakeDiscord

ModalValues = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class Upload:
    """A file a user attaches to a slash command's attachment option."""

    filename: str
    data: bytes
    content_type: str | None = None


class UserInput:
    """Builds interaction ``data`` from what a test's user typed, against ``server``'s commands."""

    def __init__(self, server: FakeDiscord) -> None:
        self.server = server

    def command_data(
        self,
        command: str,
        values: Mapping[str, Any],
        *,
        focused: str | None,
        channel: FakeChannel,
    ) -> Payload:
        """``/command`` (``"lora add"`` for a subcommand) with option values, or with the
        ``focused`` one being typed (autocomplete: no required-option check)."""
        top, *path = command.split()
        registered = self.server.find_command(top, self.server.scene.guild_id)
        schema: list[Payload] | None = registered.get("options", []) if registered else None
        chain: list[tuple[str, int]] = []
        for depth, name in enumerate(path):
            if schema is None:
                chain.append((name, payloads.SUB_COMMAND if depth == len(path) - 1 else 2))
                continue
            option = _find_option(schema, name, top)
            if option["type"] not in (payloads.SUB_COMMAND, payloads.SUB_COMMAND_GROUP):
                raise LookupError(f"/{command}: {name!r} is not a subcommand")
            chain.append((name, option["type"]))
            schema = option.get("options", [])
        if schema is not None and focused is None:
            missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
            if missing:
                raise ValueError(f"/{command}: required options missing: {missing}")
        resolved: dict[str, dict[str, Payload]] = {
            k: {} for k in ("users", "members", "roles", "channels", "attachments")
        }
        options = [
            self._option(name, value, schema, resolved, focused == name, channel, command)
            for name, value in values.items()
        ]
        for name, option_type in reversed(chain):
            options = [payloads.command_option(name, option_type, options=options)]
        return payloads.application_command_data(
            int(registered["id"]) if registered else self.server.new_id(),
            top,
            options,
            resolved=resolved,
            guild_id=int(registered["guild_id"])
            if registered and "guild_id" in registered
            else None,
        )

    def _option(
        self,
        name: str,
        value: Any,
        schema: list[Payload] | None,
        resolved: dict[str, dict[str, Payload]],
        focused: bool,
        channel: FakeChannel,
        command: str,
    ) -> Payload:
        if schema is not None:
            spec = _find_option(schema, name, command)
            option_type = spec["type"]
            choices = [c["value"] for c in spec.get("choices") or []]
            if choices and not focused and value not in choices:
                raise ValueError(f"/{command} {name}: {value!r} is not one of {choices}")
        else:
            option_type = _infer_type(value)
        if focused:
            return payloads.command_option(name, option_type, str(value), focused=True)
        return payloads.command_option(
            name, option_type, self._resolve(option_type, value, resolved, channel)
        )

    def _resolve(
        self,
        option_type: int,
        value: Any,
        resolved: dict[str, dict[str, Payload]],
        channel: FakeChannel,
    ) -> Any:
        """The wire value of an option, adding snowflake targets to ``resolved``."""
        if option_type == payloads.ATTACHMENT:
            if not isinstance(value, Upload):
                raise TypeError("attachment options take an Upload")
            attachment = self.server.add_upload(
                channel.id, value.filename, value.data, value.content_type
            )
            resolved["attachments"][attachment["id"]] = attachment
            return attachment["id"]
        if isinstance(value, FakeUser):
            value = self.server.scene.member(value.id)
        if isinstance(value, FakeMember) and option_type in (payloads.USER, payloads.MENTIONABLE):
            member = self.server.scene.member_payload(value, with_permissions=True)
            resolved["users"][str(value.id)] = member.pop("user")
            resolved["members"][str(value.id)] = member
            return str(value.id)
        if isinstance(value, FakeRole) and option_type in (payloads.ROLE, payloads.MENTIONABLE):
            resolved["roles"][str(value.id)] = value.payload()
            return str(value.id)
        if isinstance(value, FakeChannel) and option_type == payloads.CHANNEL:
            resolved["channels"][str(value.id)] = {
                **value.payload(self.server.scene.guild_id),
                "permissions": str(discord.Permissions.all().value),
            }
            return str(value.id)
        converters: dict[int, Callable[[Any], Any]] = {
            payloads.STRING: str,
            payloads.INTEGER: int,
            payloads.BOOLEAN: bool,
            payloads.NUMBER: float,
        }
        if option_type not in converters:
            raise TypeError(f"cannot send {value!r} as option type {option_type}")
        return converters[option_type](value)


def modal_submit_data(modal: Payload, values: ModalValues) -> Payload:
    """The submission of ``modal``: ``values`` by input custom_id, other inputs as pre-filled."""
    unknown = set(values) - {c.get("custom_id") for c in _walk(modal["components"])}
    if unknown:
        raise LookupError(f"modal {modal['custom_id']!r} has no inputs {sorted(unknown)}")
    components = [_submitted(c, values) for c in modal["components"]]
    return payloads.modal_submit_data(modal["custom_id"], components)


def _find_option(schema: Sequence[Payload], name: str, command: str) -> Payload:
    for option in schema:
        if option["name"] == name:
            return option
    raise LookupError(f"/{command} has no option {name!r}; it has {[o['name'] for o in schema]}")


def _infer_type(value: Any) -> int:
    """Option type for a command the bot never registered (no schema to read it from)."""
    if isinstance(value, bool):
        return payloads.BOOLEAN
    if isinstance(value, int):
        return payloads.INTEGER
    if isinstance(value, float):
        return payloads.NUMBER
    if isinstance(value, Upload):
        return payloads.ATTACHMENT
    if isinstance(value, FakeMember | FakeUser):
        return payloads.USER
    if isinstance(value, FakeChannel):
        return payloads.CHANNEL
    if isinstance(value, FakeRole):
        return payloads.ROLE
    return payloads.STRING


def _walk(components: Sequence[Payload]) -> list[Payload]:
    found: list[Payload] = []
    for component in components:
        found.append(component)
        found += _walk(component.get("components", []))
        if isinstance(component.get("component"), dict):
            found += _walk([component["component"]])
    return found


def _submitted(component: Payload, values: ModalValues) -> Payload:
    """The modal-submit echo of one modal component, carrying what the user entered."""
    kind = component.get("type")
    if kind == 1:
        return {"type": 1, "components": [_submitted(c, values) for c in component["components"]]}
    if kind == 18:
        return {"type": 18, "component": _submitted(component["component"], values)}
    custom_id = component.get("custom_id")
    submitted: Payload = {"type": kind, "custom_id": custom_id}
    if "id" in component:
        submitted["id"] = component["id"]
    if kind == 4:
        value = values.get(custom_id, component.get("value") or "")
        submitted["value"] = value if isinstance(value, str) else "".join(value)
    elif custom_id is not None:
        chosen = values.get(custom_id, [])
        submitted["values"] = [chosen] if isinstance(chosen, str) else list(chosen)
    return submitted
