"""Long prompts full of Markdown specials still fit Discord's 2,000 characters, end to end.

The fake Discord refuses an over-limit body with a 400 as Discord does, so the result message
can only appear if every status edit and the final edit fit after escaping.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import imagine
from tests.fakediscord import DiscordHarness

pytestmark = pytest.mark.e2e

SPECIALS_PROMPT = ("_[]()*" * 400)[:1900]
"""1,900 characters that all double when escaped: 3,800 escaped, far over one message."""


async def test_a_prompt_of_markdown_specials_gets_its_result_posted(
    discord: DiscordHarness,
) -> None:
    done = await imagine(discord, SPECIALS_PROMPT, user=discord.alice)
    assert len(done.content) <= 2000
    assert f"<@{discord.alice.id}>" in done.content
    assert "…" in done.content, "the shown prompt says it was cut"
    assert "\\_\\[\\]\\(\\)\\*" in done.content, "the prompt is shown escaped"
    assert all(len(state.get("content") or "") <= 2000 for state in done.history)
