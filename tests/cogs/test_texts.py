"""Message texts: escaping, truncation, progress bars."""

from __future__ import annotations

from cogs import texts
from pipeline.request import GenerationRequest, Mode


def test_user_text_cannot_ping_or_format() -> None:
    request = GenerationRequest("@everyone **bold** <@123> [link](http://x)")
    line = texts.headline(request, 7)
    assert "@everyone" not in line.replace("\\@everyone", "")
    assert "<@123>" not in line
    assert line.endswith("- <@7>")


def test_long_prompts_are_cut_to_fit_a_message() -> None:
    line = texts.headline(GenerationRequest("fox " * 1000), 1)
    assert len(line) < 2000
    assert "…" in line


def test_progress_shows_step_and_a_bar() -> None:
    text = texts.running(GenerationRequest("a fox"), 1, 10, 20)
    assert "step 10/20" in text
    assert "▰▰▰▰▰▱▱▱▱▱" in text


def test_queued_and_finished_and_failed() -> None:
    request = GenerationRequest("a fox", mode=Mode.UPSCALE)
    assert "#3 in the queue" in texts.queued(request, 1, 3, 75)
    assert "about 1 min" in texts.queued(request, 1, 3, 75)
    assert "(Upscale)" in texts.headline(request, 1)
    assert "seed 42-45" in texts.finished(GenerationRequest("a fox"), 1, [42, 43, 44, 45])
    assert "Cancelled" in texts.failed(request, 1, "cancelled")
    assert "❌ out of memory" in texts.failed(request, 1, "out of memory")


def test_recipe_notes_fit_one_message_and_say_how_many_are_left() -> None:
    notes = [f"Field {index}: {'x' * 90}: not read here" for index in range(40)]
    text = texts.recipe_notes(notes)
    assert len(text) <= 2000
    assert text.startswith("ℹ️ From the pasted parameters:\n- Field 0")
    shown = text.count("\n- Field ")
    assert text.endswith(f"- and {40 - shown} more")
