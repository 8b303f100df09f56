"""Server policy: NSFW words however disguised, LoRA names and triggers, and the DM policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.guild import Actor, GuildRules
from bot.policy import DMS_OFF, DmPolicy, Place, Policy
from data.db import Database
from data.repositories import Repositories
from pipeline.errors import UserError
from pipeline.request import GenerationRequest, HypernetRef, LoraRef

HOME, OTHER = 7, 8
TRIGGERS = {"skin_lora": ("nude", "beach"), "fox_lora": ("fox",)}


@pytest.fixture
async def rules(tmp_path: Path) -> AsyncIterator[GuildRules]:
    db = await Database.open(tmp_path / "dreamcord.db")
    repos = Repositories.over(db)
    guild = GuildRules(repos.settings, repos.audit, 1024 * 1024, 150)
    for guild_id in (HOME, OTHER):
        await guild.set_policy(Actor(guild_id, 1), "policy.set", nsfw_words="nude, gore")
    yield guild
    await db.close()


def policy(rules: GuildRules, dm_policy: DmPolicy = "off") -> Policy:
    return Policy(
        rules,
        lora_triggers=lambda name: TRIGGERS.get(name, ()),
        dm_policy=dm_policy,
        home_guild=HOME,
    )


def sfw(guild_id: int | None = OTHER, nsfw: bool = False) -> Place:
    return Place(guild_id=guild_id, channel_id=3, channel_is_nsfw=nsfw, user_id=5)


async def test_disguised_words_lora_names_and_triggers_are_refused(rules: GuildRules) -> None:
    check = policy(rules).check
    for request in (
        GenerationRequest(prompt="nude_body"),
        GenerationRequest(prompt="n u d e"),
        GenerationRequest(prompt="ｎｕ\u200bdes"),
        GenerationRequest(prompt="a fox", loras=(LoraRef("skin_lora"),)),
        GenerationRequest(prompt="a fox", loras=(LoraRef("Nude-Style"),)),
        GenerationRequest(prompt="a fox", hypernets=(HypernetRef("gore.v2"),)),
    ):
        with pytest.raises(UserError, match="not allowed outside NSFW channels"):
            await check(sfw(), request)
        await check(sfw(nsfw=True), request)


async def test_the_negative_prompt_and_clean_loras_pass(rules: GuildRules) -> None:
    check = policy(rules).check
    await check(sfw(), GenerationRequest(prompt="a statue", negative="nude, gore"))
    await check(sfw(), GenerationRequest(prompt="a denuded hill", loras=(LoraRef("fox_lora"),)))


async def test_dms_are_refused_unless_the_owner_allows_them(rules: GuildRules) -> None:
    with pytest.raises(UserError) as refused:
        await policy(rules).check(sfw(guild_id=None), GenerationRequest(prompt="a fox"))
    assert str(refused.value) == DMS_OFF


async def test_dms_follow_the_home_servers_rules_as_the_policy_says(rules: GuildRules) -> None:
    await rules.set_policy(Actor(HOME, 1), "policy.set", max_steps=10, add_channel=99)
    safe = policy(rules, "sfw")
    await safe.check(sfw(guild_id=None), GenerationRequest(prompt="a fox", steps=5))
    with pytest.raises(UserError, match="not allowed outside NSFW"):
        await safe.check(sfw(guild_id=None), GenerationRequest(prompt="a nude"))
    with pytest.raises(UserError, match="at most 10 steps"):
        await safe.check(sfw(guild_id=None), GenerationRequest(prompt="a fox", steps=20))
    open_dms = policy(rules, "nsfw")
    await open_dms.check(sfw(guild_id=None, nsfw=True), GenerationRequest(prompt="nude", steps=5))
    with pytest.raises(UserError, match="at most 10 steps"):
        await open_dms.check(sfw(guild_id=None, nsfw=True), GenerationRequest(prompt="x", steps=20))
