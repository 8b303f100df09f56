"""/imagine with a pasted A1111 recipe: the parameters option, or an infotext in the prompt."""

from __future__ import annotations

import pytest

from cogs.fitting import escape
from tests.e2e.conftest import ephemeral_reply, generation_id_of, is_result
from tests.fakediscord import DiscordHarness

pytestmark = pytest.mark.e2e

# As A1111 writes it, on one line: Discord's string options carry no newlines.
PASTED = (
    "a lighthouse at dusk, (waves:1.2) <lora:add_detail:0.5> Negative prompt: blurry, lowres "
    "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 424242, "
    "Size: 64x96, Clip skip: 2, RNG: CPU, Face restoration: CodeFormer, "
    'Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1'
)


async def _request_of(discord: DiscordHarness, ix):
    done = await ix.wait_for_original(is_result, timeout=60)
    generation = await discord.client.services.repos.generations.get(generation_id_of(done))
    assert generation is not None
    return generation.request


async def test_the_parameters_option_runs_the_recipe_and_notes_what_it_cannot(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash("imagine", parameters=PASTED, count=1, user=discord.alice)
    request = await _request_of(discord, ix)
    assert (request.prompt, request.negative) == (
        "a lighthouse at dusk, (waves:1.2)",
        "blurry, lowres",
    )
    assert (request.steps, request.sampler, request.schedule) == (2, "DPM++ 2M", "Karras")
    assert (request.cfg, request.seed, request.clip_skip) == (6.5, 424242, 2)
    assert (request.width, request.height, request.rng) == (64, 96, "CPU")
    assert request.loras == ()
    notes = await ephemeral_reply(ix)
    assert "From the pasted parameters" in notes.content
    assert "Face restoration" in notes.content
    assert escape("LoRA 'add_detail' (hash 7c6bad76eb54) is not installed here") in notes.content


async def test_an_infotext_pasted_as_the_prompt_is_read_as_a_recipe(
    discord: DiscordHarness,
) -> None:
    ix = await discord.slash("imagine", prompt=PASTED, count=1, user=discord.alice)
    request = await _request_of(discord, ix)
    assert request.prompt == "a lighthouse at dusk, (waves:1.2)"
    assert (request.seed, request.height) == (424242, 96)


async def test_options_given_with_the_parameters_override_them(discord: DiscordHarness) -> None:
    ix = await discord.slash(
        "imagine", prompt="a red boat", parameters=PASTED, steps=3, count=1, user=discord.bob
    )
    request = await _request_of(discord, ix)
    assert (request.prompt, request.steps, request.seed) == ("a red boat", 3, 424242)
    assert request.negative == "blurry, lowres"


async def test_neither_a_prompt_nor_parameters_is_answered_privately(
    discord: DiscordHarness,
) -> None:
    reply = await ephemeral_reply(await discord.slash("imagine", user=discord.alice))
    assert "give a prompt, or paste an A1111 recipe" in reply.content


async def test_a_bad_field_is_answered_privately_with_its_name(discord: DiscordHarness) -> None:
    pasted = PASTED.replace("Steps: 2", "Steps: many")
    reply = await ephemeral_reply(await discord.slash("imagine", parameters=pasted))
    assert "Steps: 'many' is not a whole number" in reply.content
    reply = await ephemeral_reply(await discord.slash("imagine", parameters="just some words"))
    assert "this is not A1111 parameters" in reply.content
