"""Complete Discord API payloads, shaped for discord.py 2.7.1.

discord.py indexes many payload keys directly (``data['position']``, ``data['flags']``,
``data['attachment_size_limit']``...), and a missing key raised inside the gateway reader kills
``Client.start()``. Every builder here therefore emits the full object as Discord sends it, not
the minimum a single test happens to need. Builders are pure functions over plain values, so the
fake server, the harness and unit tests can all share them.
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Payload = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # 10 MiB: an unboosted server

# Interaction types (Discord's numbering).
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5

# Application command option types.
SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = (
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
)

# Message flags that the fake server maintains itself.
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

# Message types.
MESSAGE_DEFAULT, MESSAGE_CHAT_INPUT_COMMAND = 0, 20


class SnowflakeFactory:
    """Makes increasing, time-based snowflakes so ``created_at`` values look real."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def __call__(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (1 << 17) | (next(self._counter) & 0xFFF)


def iso_timestamp(moment: datetime.datetime | None = None) -> str:
    """Discord's ISO-8601 timestamps, always timezone-aware."""
    return (moment or datetime.datetime.now(datetime.UTC)).isoformat()


def user(
    user_id: int,
    username: str,
    *,
    global_name: str | None = None,
    bot: bool = False,
) -> Payload:
    """A user object (also the ``author`` of a message)."""
    payload: Payload = {
        "id": str(user_id),
        "username": username,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
        "collectibles": None,
    }
    if bot:
        payload["bot"] = True
    return payload


def client_user(user_id: int, username: str) -> Payload:
    """``GET /users/@me`` and READY's ``user``: a user plus the private account fields."""
    return {
        **user(user_id, username, bot=True),
        "verified": True,
        "mfa_enabled": False,
        "locale": "en-US",
        "email": None,
    }


def role(
    role_id: int,
    name: str,
    permissions: int,
    *,
    position: int = 0,
    color: int = 0,
    managed: bool = False,
    hoist: bool = False,
) -> Payload:
    """A guild role; the @everyone role has the guild's id."""
    return {
        "id": str(role_id),
        "name": name,
        "description": None,
        "color": color,
        "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
        "hoist": hoist,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }


def text_channel(
    channel_id: int,
    guild_id: int,
    name: str,
    *,
    position: int,
    nsfw: bool = False,
    topic: str | None = None,
    parent_id: int | None = None,
) -> Payload:
    """A guild text channel (type 0) as in GUILD_CREATE and ``GET /channels/{id}``."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "nsfw": nsfw,
        "topic": topic,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "parent_id": str(parent_id) if parent_id else None,
        "default_auto_archive_duration": 1440,
        "default_thread_rate_limit_per_user": 0,
        "flags": 0,
    }


def member(
    user_payload: Payload,
    role_ids: Iterable[int],
    *,
    joined_at: str | None = None,
    permissions: int | None = None,
    nick: str | None = None,
) -> Payload:
    """A guild member; ``permissions`` (a string bit set) is present only in interactions."""
    payload: Payload = {
        "user": user_payload,
        "nick": nick,
        "avatar": None,
        "banner": None,
        "roles": [str(r) for r in role_ids],
        "joined_at": joined_at or iso_timestamp(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
        "avatar_decoration_data": None,
    }
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


def guild(
    guild_id: int,
    name: str,
    *,
    owner_id: int,
    roles: Sequence[Payload],
    channels: Sequence[Payload],
    members: Sequence[Payload],
    joined_at: str | None = None,
) -> Payload:
    """The GUILD_CREATE payload: the guild with its roles, channels and members inline."""
    return {
        "id": str(guild_id),
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id),
        "region": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "widget_enabled": False,
        "widget_channel_id": None,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "roles": list(roles),
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_presences": None,
        "max_members": 500_000,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "incidents_data": None,
        "hub_type": None,
        "lazy": True,
        "large": False,
        "unavailable": False,
        "joined_at": joined_at or iso_timestamp(),
        "member_count": len(members),
        "members": list(members),
        "channels": list(channels),
        "threads": [],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def application(app_id: int, name: str, *, owner: Payload, bot: Payload) -> Payload:
    """``GET /oauth2/applications/@me``: the bot's application (not an interactions URL app)."""
    return {
        "id": str(app_id),
        "name": name,
        "icon": None,
        "description": "",
        "summary": "",
        "type": None,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": owner,
        "team": None,
        "flags": 0,
        "bot": bot,
        "rpc_origins": [],
        "redirect_uris": [],
        "tags": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "approximate_guild_count": 1,
        "integration_types_config": {"0": {}},
        "install_params": None,
        "custom_install_url": None,
        "terms_of_service_url": None,
        "privacy_policy_url": None,
    }


def ready(
    *,
    session_id: str,
    resume_gateway_url: str,
    bot: Payload,
    app_id: int,
    guild_ids: Iterable[int],
) -> Payload:
    """The READY dispatch: guilds arrive unavailable and are filled by GUILD_CREATE after."""
    return {
        "v": 10,
        "user": bot,
        "user_settings": {},
        "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_gateway_url,
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["local"],
        "application": {"id": str(app_id), "flags": 0},
        "auth_session_id_hash": "",
        "_trace": ["fakediscord-gateway"],
    }


def attachment(
    attachment_id: int,
    filename: str,
    *,
    size: int,
    url: str,
    content_type: str | None = None,
    width: int | None = None,
    height: int | None = None,
    description: str | None = None,
    ephemeral: bool = False,
) -> Payload:
    """An attachment served from the fake CDN (``url`` and ``proxy_url`` both resolve)."""
    payload: Payload = {
        "id": str(attachment_id),
        "filename": filename,
        "title": None,
        "description": description,
        "content_type": content_type,
        "size": size,
        "url": url,
        "proxy_url": url,
        "placeholder": None,
        "placeholder_version": None,
        "ephemeral": ephemeral,
        "flags": 0,
    }
    if width is not None and height is not None:
        payload["width"] = width
        payload["height"] = height
    return payload


def message(
    message_id: int,
    channel_id: int,
    author: Payload,
    *,
    content: str = "",
    guild_id: int | None = None,
    embeds: Sequence[Payload] = (),
    components: Sequence[Payload] = (),
    attachments: Sequence[Payload] = (),
    flags: int = 0,
    message_type: int = MESSAGE_DEFAULT,
    webhook_id: int | None = None,
    application_id: int | None = None,
    interaction_metadata: Payload | None = None,
    author_member: Payload | None = None,
    timestamp: str | None = None,
    edited_timestamp: str | None = None,
    nonce: str | int | None = None,
) -> Payload:
    """A message as REST returns it; gateway events add ``guild_id`` and ``member``."""
    payload: Payload = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "type": message_type,
        "author": author,
        "content": content,
        "timestamp": timestamp or iso_timestamp(),
        "edited_timestamp": edited_timestamp,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "mention_channels": [],
        "attachments": list(attachments),
        "embeds": list(embeds),
        "reactions": [],
        "pinned": False,
        "flags": flags,
        "components": list(components),
        "position": None,
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    if author_member is not None:
        payload["member"] = author_member
    if webhook_id is not None:
        payload["webhook_id"] = str(webhook_id)
    if application_id is not None:
        payload["application_id"] = str(application_id)
    if interaction_metadata is not None:
        payload["interaction_metadata"] = interaction_metadata
    if nonce is not None:
        payload["nonce"] = nonce
    return payload


def interaction_metadata(
    interaction_id: int, interaction_type: int, user_payload: Payload, guild_id: int | None
) -> Payload:
    """``message.interaction_metadata``: which interaction produced a response message."""
    owners = {"0": str(guild_id)} if guild_id is not None else {"1": user_payload["id"]}
    return {
        "id": str(interaction_id),
        "type": interaction_type,
        "user": user_payload,
        "authorizing_integration_owners": owners,
    }


def command_option(
    name: str,
    option_type: int,
    value: Any = None,
    *,
    focused: bool = False,
    options: Sequence[Payload] | None = None,
) -> Payload:
    """One entry of ``data.options`` in an application command or autocomplete interaction."""
    payload: Payload = {"name": name, "type": option_type}
    if options is not None:
        payload["options"] = list(options)
    else:
        payload["value"] = value
    if focused:
        payload["focused"] = True
    return payload


def application_command_data(
    command_id: int,
    name: str,
    options: Sequence[Payload],
    *,
    resolved: Mapping[str, Mapping[str, Payload]] | None = None,
    guild_id: int | None = None,
    command_type: int = 1,
) -> Payload:
    """``data`` of a slash command (or autocomplete) interaction."""
    payload: Payload = {
        "id": str(command_id),
        "name": name,
        "type": command_type,
        "options": list(options),
    }
    if resolved:
        payload["resolved"] = {kind: dict(items) for kind, items in resolved.items() if items}
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    return payload


def component_data(
    custom_id: str, component_type: int = 2, values: Sequence[str] | None = None
) -> Payload:
    """``data`` of a component interaction (a button click, or a select with its values)."""
    payload: Payload = {"custom_id": custom_id, "component_type": component_type}
    if values is not None:
        payload["values"] = list(values)
    return payload


def modal_submit_data(custom_id: str, components: Sequence[Payload]) -> Payload:
    """``data`` of a modal submit: the modal's rows with the values the user typed."""
    return {"custom_id": custom_id, "components": list(components)}


def interaction(
    *,
    interaction_id: int,
    interaction_type: int,
    token: str,
    application_id: int,
    data: Payload | None,
    guild_id: int | None,
    channel: Payload,
    member_payload: Payload | None = None,
    user_payload: Payload | None = None,
    app_permissions: int = 0,
    message_payload: Payload | None = None,
    locale: str = "en-US",
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
) -> Payload:
    """INTERACTION_CREATE: a guild interaction carries ``member`` (with ``permissions``)."""
    payload: Payload = {
        "id": str(interaction_id),
        "application_id": str(application_id),
        "type": interaction_type,
        "token": token,
        "version": 1,
        "channel": channel,
        "channel_id": channel["id"],
        "app_permissions": str(app_permissions),
        "locale": locale,
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": attachment_size_limit,
    }
    if data is not None:
        payload["data"] = data
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
        payload["guild_locale"] = "en-US"
        payload["member"] = member_payload
        payload["authorizing_integration_owners"] = {"0": str(guild_id)}
        payload["context"] = 0
    else:
        payload["user"] = user_payload
        payload["authorizing_integration_owners"] = {"1": (user_payload or {}).get("id")}
        payload["context"] = 1
    if message_payload is not None:
        payload["message"] = message_payload
    return payload


def interaction_callback(
    *,
    interaction_id: int,
    interaction_type: int,
    callback_type: int,
    message_payload: Payload | None = None,
    loading: bool = False,
    ephemeral: bool = False,
) -> Payload:
    """The ``?with_response=1`` answer to an interaction callback (discord.py always asks)."""
    body: Payload = {
        "interaction": {
            "id": str(interaction_id),
            "type": interaction_type,
            "activity_instance_id": None,
            "response_message_id": message_payload["id"] if message_payload else None,
            "response_message_loading": loading,
            "response_message_ephemeral": ephemeral,
        },
        "resource": {"type": callback_type},
    }
    if message_payload is not None:
        body["resource"]["message"] = message_payload
    return body


def error(code: int, message: str) -> Payload:
    """Discord's JSON error body: a numeric ``code`` plus a human ``message``."""
    return {"code": code, "message": message}
