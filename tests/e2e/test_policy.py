"""Server policy end to end: admins set it with /policy, /imagine obeys it, others are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import ephemeral_reply
from tests.e2e.test_library import add_lora, lora_upload
from tests.fakediscord import DiscordHarness, InteractionRecord

pytestmark = pytest.mark.e2e


async def refusal(ix: InteractionRecord) -> str:
    """The ephemeral text a refused /imagine got; nothing public stays behind."""
    reply = await ephemeral_reply(ix)
    assert ix.original is None or ix.original.deleted or ix.original.ephemeral
    return reply.content


async def accepted(ix: InteractionRecord) -> None:
    await ix.wait_for_original(lambda m: "Queued" in m.content or "step" in m.content)


async def set_policy(discord: DiscordHarness, **options: object) -> str:
    ix = await discord.slash("policy set", user=discord.admin, **options)
    reply = await ephemeral_reply(ix)
    return " ".join(str(field) for embed in reply.embeds for field in embed.get("fields", []))


async def test_policy_refusals_are_ephemeral_and_say_what_to_change(
    discord: DiscordHarness,
) -> None:
    await set_policy(discord, nsfw_words="nude, gore", max_steps=5)

    nsfw = await discord.slash("imagine", prompt="a nude statue", count=1)
    assert "not allowed outside NSFW channels" in await refusal(nsfw)
    inside = await discord.slash("imagine", prompt="a nude statue", count=1, channel=discord.nsfw)
    await accepted(inside)

    steps = await discord.slash("imagine", prompt="a quiet pond", count=1, steps=10)
    assert "at most 5 steps" in await refusal(steps)

    await set_policy(discord, add_channel=discord.art)
    elsewhere = await discord.slash("imagine", prompt="a quiet pond", count=1)
    assert f"<#{discord.art.id}>" in await refusal(elsewhere)
    allowed = await discord.slash("imagine", prompt="a quiet pond", count=1, channel=discord.art)
    await accepted(allowed)


async def test_policy_changes_are_shown_reset_and_audited(discord: DiscordHarness) -> None:
    saved = await set_policy(discord, max_count=2, cooldown=30, default_negative="blurry")
    assert "blurry" in saved and "30 s" in saved

    show = await discord.slash("policy show", user=discord.admin)
    shown = (await ephemeral_reply(show)).embeds[0]
    assert {"name": "max_count", "value": "2", "inline": False} in shown["fields"]

    reset = await discord.slash("policy reset", user=discord.admin, rule="cooldown")
    await ephemeral_reply(reset)
    repos = discord.client.services.repos
    policy = await repos.settings.guild(discord.scene.guild_id)
    assert policy == {"max_count": 2, "negative": "blurry"}
    entries = await repos.audit.list_for_guild(discord.scene.guild_id)
    assert [(e.action, e.target) for e in reversed(entries)] == [
        ("policy.set", "max_count"),
        ("policy.set", "cooldown_s"),
        ("policy.set", "negative"),
        ("policy.reset", "cooldown_s"),
    ]
    assert all(entry.user_id == discord.admin.id for entry in entries)


async def test_a_non_admin_cannot_see_or_change_the_policy(discord: DiscordHarness) -> None:
    for command, options in (("policy show", {}), ("policy set", {"max_steps": 1})):
        ix = await discord.slash(command, user=discord.alice, **options)
        await ix.wait_for_response()
        assert ix.ack_latency is not None and ix.ack_latency < 3
        assert "only server admins" in (await ephemeral_reply(ix)).content
    assert await discord.client.services.repos.settings.guild(discord.scene.guild_id) == {}
    assert str(discord.command("policy")["default_member_permissions"]) == "32", "Manage Server"


async def test_disguised_nsfw_words_and_loras_that_carry_them_are_refused(
    discord: DiscordHarness, tmp_path: Path
) -> None:
    await set_policy(discord, nsfw_words="nude")
    for prompt in ("nude_body", "two nudes", "n u d e", "nu\u200bde", "\uff4e\uff55\uff44\uff45"):
        ix = await discord.slash("imagine", prompt=prompt, count=1)
        assert "nude is not allowed outside NSFW channels" in await refusal(ix), prompt

    await add_lora(discord, lora_upload(tmp_path), name="skin", triggers="nude, beach")
    await add_lora(discord, lora_upload(tmp_path, "b.safetensors", seed=1), name="Nude-Style")
    for prompt in ("a beach <lora:skin:0.8>", "a beach <lora:Nude-Style:1>"):
        ix = await discord.slash("imagine", prompt=prompt, count=1)
        assert "LoRA names and trigger words count too" in await refusal(ix), prompt

    with_preview = await discord.slash(
        "lora add",
        user=discord.admin,
        file=lora_upload(tmp_path, "c.safetensors", seed=2),
        name="tan",
        triggers="nudes",
    )
    note = await with_preview.wait_for_followup(lambda m: "preview" in m.content, timeout=20)
    assert "the preview was not queued (nude is not allowed" in note.content

    fine = await discord.slash("imagine", prompt="a denuded hill", negative="nude", count=1)
    await accepted(fine)
