"""A server's settings: /policy options turned into typed fields, stored and audited."""

from __future__ import annotations

import pytest

from bot.followups import TiledUpscale
from bot.guild import Actor, GuildRules, GuildSettings, parse_words, policy_changes
from cogs.admin import describe_policy
from data.repositories import Repositories
from pipeline.errors import UserError

LIMIT = 1024 * 1024
ADMIN = Actor(guild_id=7, user_id=42)


def test_words_are_lower_cased_deduplicated_and_none_clears() -> None:
    assert parse_words(" Gore, nude ,gore,, Blood  Bath") == ("gore", "nude", "blood bath")
    assert parse_words("none") == ()
    with pytest.raises(UserError, match="keep the list"):
        parse_words(",".join(f"w{n}" for n in range(201)))


def test_channels_are_added_and_removed() -> None:
    empty = GuildSettings()
    assert policy_changes(empty, add_channel=5, max_pixels_limit=LIMIT) == {"channels": (5,)}
    current = GuildSettings(channels=(5, 6))
    assert policy_changes(current, remove_channel=5, max_pixels_limit=LIMIT) == {"channels": (6,)}


def test_limits_are_the_fields_policy_checks() -> None:
    changes = policy_changes(
        GuildSettings(),
        max_steps=20,
        max_size="768x768",
        max_count=2,
        cooldown=0,
        default_negative="off",
        max_pixels_limit=LIMIT,
    )
    assert changes == {
        "max_steps": 20,
        "max_pixels": 768 * 768,
        "max_count": 2,
        "cooldown_s": None,
        "negative": None,
    }


def test_a_max_size_over_the_bot_limit_is_refused() -> None:
    with pytest.raises(UserError, match="over the limit"):
        policy_changes(GuildSettings(), max_size="2048x2048", max_pixels_limit=LIMIT)


def test_describe_policy_reads_defaults_in_words() -> None:
    rows = dict(describe_policy(GuildSettings(channels=(1, 2), cooldown_s=10)))
    assert rows["channels"] == "<#1>, <#2>"
    assert rows["cooldown"] == "10 s"
    assert rows["max_steps"] == "bot limit"


async def test_a_change_is_stored_under_its_key_and_audited_once_per_changed_field(
    repos: Repositories,
) -> None:
    rules = GuildRules(repos.settings, repos.audit, LIMIT, 60)
    await rules.set_policy(ADMIN, "policy.set", add_channel=5, max_steps=20)
    await rules.set_policy(ADMIN, "policy.set", max_steps=20)  # unchanged: not audited again
    assert await repos.settings.guild(7) == {"channels": [5], "max_steps": 20}
    audit = await repos.audit.list_for_guild(7)
    assert sorted((entry.target, entry.detail["to"]) for entry in audit) == [
        ("channels", [5]),
        ("max_steps", 20),
    ]
    reset = await rules.reset_rules(ADMIN, ("channels",))
    assert reset.channels == () and await repos.settings.guild(7) == {"max_steps": 20}


async def test_the_upscale_settings_are_stored_and_read_back_for_the_buttons(
    repos: Repositories,
) -> None:
    rules = GuildRules(repos.settings, repos.audit, LIMIT, 60)
    assert (await rules.settings(7)).tiled_upscale() == TiledUpscale(), "defaults until set"
    await rules.set_policy(
        ADMIN,
        "policy.set",
        upscale_steps=12,
        upscale_subtle=0.2,
        upscale_creative=0.5,
        upscale_tile=768,
    )
    choices = (await rules.settings(7)).tiled_upscale()
    assert choices == TiledUpscale(steps=12, subtle=0.2, creative=0.5, tile=768)
    reset = await rules.reset_rules(ADMIN, ("upscale_tile",))
    assert reset.tiled_upscale().tile == 512


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"upscale_tile": 300}, "tile size 300 is not allowed: use a multiple of 64 from 256"),
        ({"upscale_tile": 192}, "tile size 192 is not allowed"),
        ({"upscale_subtle": 0.0}, "upscale_subtle 0 is out of range: use more than 0, up to 1"),
        ({"upscale_creative": 1.5}, "upscale_creative 1.5 is out of range"),
        ({"upscale_steps": 61}, "upscale_steps 61 is out of range: use 1 to 60"),
    ],
)
def test_bad_upscale_settings_are_refused_with_what_to_use(
    options: dict[str, float], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        policy_changes(GuildSettings(), max_pixels_limit=LIMIT, max_steps_limit=60, **options)
