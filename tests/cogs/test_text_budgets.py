"""Every message, embed, modal and view the bot builds stays within Discord's limits after
escaping, for any prompt. The limits are the fake Discord's checks (Discord's documented
numbers), the same ones that answer the real bot 400 in the end-to-end tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import discord
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.app import GuildSettings, QueuedJob, SavedDefaults, ScanOutcome, ShownUnit, Style
from bot.library_kinds import LORAS
from cogs import texts
from cogs.account import defaults_embed
from cogs.admin import policy_embed
from cogs.buttons import EditModal, favourite_view, result_view
from cogs.info import HELP, MAX_LISTED, queue_text, queue_view
from cogs.library.embeds import entry_embed, history_embed, refusal_embed, scan_embed
from cogs.models import styles_embed
from cogs.options import filter_names
from cogs.pages import Entry, Page, page_embeds, page_header
from data.audit import AuditEntry
from data.generations import Generation, Image
from data.registry import LoraEntry, LoraKind, ModelBase, Source
from pipeline.request import ControlUnit, GenerationRequest, Mode
from tests.fakediscord.validation import check_choices, check_limits, check_modal

MAX_PROMPT = 6000
"""The longest prompt or negative /imagine takes (its option's range)."""
SPECIALS = list("\\*_~`|>[]()#-@<:")

user_text = st.lists(
    st.one_of(st.sampled_from(SPECIALS), st.characters(), st.just("<@123>")),
    max_size=MAX_PROMPT,
).map("".join)
few = settings(max_examples=40, deadline=None)


def fits(
    content: str = "", embeds: Sequence[discord.Embed] = (), view: discord.ui.View | None = None
) -> None:
    check_limits(
        {
            "content": content,
            "embeds": [embed.to_dict() for embed in embeds],
            "components": view.to_components() if view else [],
        }
    )


def generation(prompt: str, negative: str = "", images: int = 4) -> Generation:
    request = GenerationRequest(prompt, negative=negative, count=images)
    return Generation(
        id=12,
        job_id="0" * 32,
        user_id=7,
        guild_id=1,
        channel_id=2,
        message_id=3,
        operation=Mode.TXT2IMG,
        parent_image_id=None,
        request=request,
        created_at="2026-12-02T13:00:00",
        deleted_at=None,
        images=tuple(
            Image(i, 12, i, 2**53 - 1 - i, None, 64, 64, f"{i}.png", "0" * 64, 10, "x")
            for i in range(images)
        ),
    )


WORST = "_" * MAX_PROMPT
MENTIONS = "<@123>" * (MAX_PROMPT // 6)


@few
@given(user_text, user_text, st.integers(0, 2**63), st.sampled_from(list(Mode)))
@example(WORST, WORST, 2**63, Mode.VARIATION)
@example(MENTIONS, MENTIONS, 2**63, Mode.IMG2IMG)
def test_job_messages_fit_even_when_posted_anew_in_the_channel(
    prompt: str, reason: str, user_id: int, mode: Mode
) -> None:
    request = GenerationRequest(prompt, mode=mode)
    seeds = [2**53 - 1, 0, 5, 2**53 - 2]
    finished = texts.finished(request, user_id, seeds) + "\n-# sent as JPEG to fit the limit"
    for content in (
        texts.queued(request, user_id, 10_000, 99_999.0),
        texts.running(request, user_id, 150, 150),
        finished,
        texts.failed(request, user_id, reason),
    ):
        fits(content)
        assert content.startswith("**") and f"<@{user_id}>" in content
    ready = texts.ready_in_channel(user_id, finished)
    fits(ready)
    assert ready.endswith(finished), "the posted result says everything the status said"
    failed = texts.failed(request, user_id, reason)
    assert texts.failed_in_channel(user_id, failed).endswith(failed)


@few
@given(st.lists(user_text, max_size=80))
@example(["_"] * 600)
@example([WORST] * 3)
def test_recipe_notes_fit(notes: list[str]) -> None:
    fits(texts.recipe_notes(notes))


@few
@given(user_text, st.lists(st.integers(0, 2**53), min_size=1, max_size=16), st.integers(0, 500))
@example("`" * MAX_PROMPT, [2**53] * 16, 500)
def test_info_fits_and_keeps_the_parameters_in_one_code_block(
    parameters: str, seeds: list[int], ancestors: int
) -> None:
    text = texts.info(2**53, seeds, parameters, list(range(ancestors)))
    fits(text)
    assert text.count("```") == 2


@few
@given(user_text, st.lists(st.text(max_size=64), max_size=3), st.floats(0, 2))
@example("`" * MAX_PROMPT, ["_" * 64] * 3, 1 / 3)
def test_info_with_control_units_fits_and_names_each(
    parameters: str, models: list[str], weight: float
) -> None:
    shown = [
        ShownUnit(n, ControlUnit(model, "map.png", weight, 0.2, 0.8, "canny"), "canny", None)
        for n, model in enumerate(models, start=1)
    ]
    text = texts.info(2**53, [2**53] * 16, parameters, list(range(500)), shown)
    fits(text)
    assert text.count("```") == 2
    assert all(f"ControlNet {n}: " in text for n in range(1, len(models) + 1))


@few
@given(st.lists(user_text, min_size=1, max_size=30))
@example([WORST] * 30)
def test_the_queue_list_fits_with_one_cancel_per_job_shown(prompts: list[str]) -> None:
    jobs = [QueuedJob(f"{n:032x}", prompt, n == 0, n, 9e9, 16) for n, prompt in enumerate(prompts)]
    text = queue_text(jobs, 10**9)
    fits(text, view=queue_view(jobs))
    assert text.count("\n**") == min(len(jobs), MAX_LISTED), "every job with a button is shown"


def test_help_fits() -> None:
    fits(HELP)


@few
@given(st.lists(user_text, min_size=1, max_size=5))
@example([WORST] * 5)
def test_history_pages_fit(prompts: list[str]) -> None:
    entries = tuple(
        Entry(
            2**53,
            "Generation 9007199254740992",
            prompt,
            tuple(range(2**53 - 16, 2**53)),
            "2048x2048",
            "2026-12-02T13:00:00",
            "https://discord.com/channels/1/2/3",
        )
        for prompt in prompts
    )
    page = Page("h", 1, 99_999, entries, True, 10**9)
    fits(page_header(page), page_embeds(page, [f"thumb-{i}.png" for i in range(5)]))


@few
@given(user_text, user_text)
@example(WORST, MENTIONS)
def test_the_edit_modal_fits_any_stored_prompt(prompt: str, negative: str) -> None:
    modal = EditModal(generation(prompt, negative))
    check_modal(modal.to_dict())
    assert prompt.startswith(modal.prompt.default or ""), "the prompt is kept, only cut"
    assert ("cut to 4,000" in modal.title) == (max(len(prompt), len(negative)) > 4000)


def test_sixteen_images_get_buttons_within_five_rows() -> None:
    grid = generation("a fox", images=16)
    fits("done", view=result_view(grid))
    fits("which?", view=favourite_view(grid, {1, 2}))
    assert [b.item.label for b in result_view(generation("a fox")).children][:2] == ["U1", "U2"]


def test_a_wide_upscale_gets_the_tiled_upscale_buttons_within_five_rows() -> None:
    one = generation("a fox", images=1)
    wide = replace(
        one,
        request=replace(one.request, mode=Mode.UPSCALE),
        images=(replace(one.images[0], width=192, height=128),),
    )
    view = result_view(wide)
    fits("done", view=view)
    tiled = [b for b in view.children if str(b.item.label).startswith("Upscale")]  # type: ignore[attr-defined]
    assert [b.item.label for b in tiled] == [  # type: ignore[attr-defined]
        "Upscale 2x Subtle",
        "Upscale 2x Creative",
        "Upscale 4x",
    ]
    assert [b.item.custom_id for b in tiled] == ["dc:s:12:0", "dc:C:12:0", "dc:q:12:0"]  # type: ignore[attr-defined]
    assert not any(
        str(b.item.label).startswith("Upscale")  # type: ignore[attr-defined]
        for b in result_view(generation("a fox")).children
    ), "a first grid has only U and V"


@few
@given(st.lists(user_text, max_size=40), user_text, user_text)
@example([WORST] * 40, WORST, WORST)
def test_library_embeds_fit(texts_: list[str], name: str, reason: str) -> None:
    triggers = tuple(texts_) or ("x",)
    entry = LoraEntry(
        1, name[:64] or "x", "0" * 64, "/p", LoraKind.LORA, ModelBase.SD1, 8, 8.0, 100, 10**12,
        triggers, 1.0, True, 1, "2026-12-02T13:00:00", Source.URL, 3, False, triggers,
    )  # fmt: skip
    fits(embeds=[entry_embed(LORAS, entry, f"LoRA {name}")])
    fits(embeds=[refusal_embed("LoRA", name, reason)])
    outcomes = [ScanOutcome(text, None, text, True) for text in texts_]
    fits(embeds=[scan_embed("LoRA", name or "/drop", outcomes)])
    audits = [
        AuditEntry(1, 1, 2**63, "lora.add", text, {"name": text, "note": reason}, "2026-12-02")
        for text in texts_
    ]
    fits(embeds=[history_embed("LoRA", audits)])


@few
@given(st.lists(user_text, max_size=20), user_text)
@example([WORST] * 20, WORST)
def test_settings_policy_and_style_embeds_fit(values: list[str], negative: str) -> None:
    rows = [(f"key{index}", value, "yours") for index, value in enumerate(values)]
    fits(embeds=[defaults_embed(SavedDefaults(True, rows))])
    rules = GuildSettings(channels=tuple(range(10**17, 10**17 + 300)), nsfw_words=tuple(values),
                          negative=negative)  # fmt: skip
    fits(embeds=[policy_embed("Server rules", rules)])
    styles = [
        Style(f"s{index}", value[:1000], value[:1000], (("x" * 64, 1.0),) * 5, "512x768", 150)
        for index, value in enumerate(values * 2)
    ]
    fits(embeds=[styles_embed(styles)])


@few
@given(st.lists(user_text, max_size=60), user_text)
@example(["x" * 101, "_" * 100], "")
def test_autocomplete_choices_fit(names: list[str], typed: str) -> None:
    choices = filter_names(names, typed[:10])
    check_choices([choice.to_dict() for choice in choices])
