"""The fake world a test bot logs into: one guild, its channels, roles and members.

Kept apart from the server so tests can name people and places (``scene.admin``,
``scene.nsfw``) and so a benchmark can build a bigger scene without touching the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import discord

from . import payloads
from .payloads import Payload, SnowflakeFactory

# What @everyone may do in a typical community server.
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    read_message_history=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    use_application_commands=True,
    use_external_emojis=True,
).value
ADMIN_PERMISSIONS = discord.Permissions(manage_guild=True, manage_messages=True).value
ADMINISTRATOR = discord.Permissions(administrator=True).value
BOT_PERMISSIONS = discord.Permissions(
    send_messages=True, embed_links=True, attach_files=True, manage_messages=True
).value


@dataclass(frozen=True)
class FakeUser:
    """A Discord account; ``bot`` marks the bot under test."""

    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def payload(self) -> Payload:
        return payloads.user(self.id, self.username, global_name=self.global_name, bot=self.bot)


@dataclass(frozen=True)
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> Payload:
        return payloads.role(self.id, self.name, self.permissions, position=self.position)


@dataclass(frozen=True)
class FakeChannel:
    id: int
    name: str
    position: int
    nsfw: bool = False

    def payload(self, guild_id: int) -> Payload:
        return payloads.text_channel(
            self.id, guild_id, self.name, position=self.position, nsfw=self.nsfw
        )


@dataclass(frozen=True)
class FakeMember:
    """A user in the guild; permissions come from @everyone plus ``role_ids``."""

    user: FakeUser
    role_ids: tuple[int, ...] = ()

    @property
    def id(self) -> int:
        return self.user.id


@dataclass
class Scene:
    """Everything the fake server knows about the world, with stable ids for one run."""

    application_id: int
    bot: FakeUser
    owner: FakeUser
    guild_id: int
    guild_name: str
    roles: list[FakeRole]
    channels: list[FakeChannel]
    members: list[FakeMember]
    admin: FakeMember
    alice: FakeMember
    bob: FakeMember
    general: FakeChannel
    art: FakeChannel
    nsfw: FakeChannel
    joined_at: str = field(default_factory=payloads.iso_timestamp)

    def role(self, role_id: int) -> FakeRole:
        return next(r for r in self.roles if r.id == role_id)

    def channel(self, channel_id: int) -> FakeChannel:
        for channel in self.channels:
            if channel.id == channel_id:
                return channel
        raise KeyError(f"no channel {channel_id} in the scene")

    def member(self, user_id: int) -> FakeMember:
        for candidate in self.members:
            if candidate.id == user_id:
                return candidate
        raise KeyError(f"no member {user_id} in the scene")

    def permissions(self, who: FakeMember) -> int:
        """Guild-level permissions (no channel overwrites exist in the fake guild)."""
        value = self.role(self.guild_id).permissions
        for role_id in who.role_ids:
            value |= self.role(role_id).permissions
        if value & ADMINISTRATOR:
            return discord.Permissions.all().value
        return value

    def member_payload(self, who: FakeMember, *, with_permissions: bool = False) -> Payload:
        return payloads.member(
            who.user.payload(),
            who.role_ids,
            joined_at=self.joined_at,
            permissions=self.permissions(who) if with_permissions else None,
        )

    def channel_payload(
        self, channel: FakeChannel, *, for_member: FakeMember | None = None
    ) -> Payload:
        """A channel; inside an interaction it also carries the member's ``permissions``."""
        payload = channel.payload(self.guild_id)
        if for_member is not None:
            payload["permissions"] = str(self.permissions(for_member))
        return payload

    def guild_payload(self) -> Payload:
        return payloads.guild(
            self.guild_id,
            self.guild_name,
            owner_id=self.owner.id,
            roles=[r.payload() for r in self.roles],
            channels=[c.payload(self.guild_id) for c in self.channels],
            members=[self.member_payload(m) for m in self.members],
            joined_at=self.joined_at,
        )

    def client_user_payload(self) -> Payload:
        """The bot as ``/users/@me`` and READY describe it, and as the author of its messages."""
        return payloads.client_user(self.bot.id, self.bot.username)

    @property
    def bot_member(self) -> FakeMember:
        return self.member(self.bot.id)


def default_scene(new_id: SnowflakeFactory | None = None) -> Scene:
    """A small community server: an admin (MANAGE_GUILD), two normal members, three channels."""
    new_id = new_id or SnowflakeFactory()
    application_id = new_id()
    guild_id = new_id()
    bot = FakeUser(application_id, "Dreamcord", bot=True)
    admin_user = FakeUser(new_id(), "ada", "Ada (admin)")
    alice_user = FakeUser(new_id(), "alice", "Alice")
    bob_user = FakeUser(new_id(), "bob", "Bob")

    everyone = FakeRole(guild_id, "@everyone", EVERYONE_PERMISSIONS, position=0)
    admins = FakeRole(new_id(), "Admins", ADMIN_PERMISSIONS, position=2)
    bot_role = FakeRole(new_id(), "Dreamcord", BOT_PERMISSIONS, position=1)

    general = FakeChannel(new_id(), "general", position=0)
    art = FakeChannel(new_id(), "art", position=1)
    nsfw = FakeChannel(new_id(), "after-dark", position=2, nsfw=True)

    admin = FakeMember(admin_user, (admins.id,))
    alice = FakeMember(alice_user)
    bob = FakeMember(bob_user)
    bot_member = FakeMember(bot, (bot_role.id,))
    return Scene(
        application_id=application_id,
        bot=bot,
        owner=admin_user,
        guild_id=guild_id,
        guild_name="Dreamcord Test Server",
        roles=[everyone, bot_role, admins],
        channels=[general, art, nsfw],
        members=[admin, alice, bob, bot_member],
        admin=admin,
        alice=alice,
        bob=bob,
        general=general,
        art=art,
        nsfw=nsfw,
    )
