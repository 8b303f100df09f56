"""The last line of defence: every error gets an ephemeral answer, bugs are logged."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from discord import app_commands

from cogs.errors import SOMETHING_WENT_WRONG, Refused, answer_error, guarded
from pipeline.errors import UserError


class FakeResponse:
    def __init__(self, done: bool) -> None:
        self.done = done
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def is_done(self) -> bool:
        return self.done

    async def send_message(self, text: str, **options: Any) -> None:
        self.sent.append((text, options))


def interaction(done: bool = False) -> Any:
    response = FakeResponse(done)
    followup = FakeResponse(done)
    followup.send = followup.send_message  # type: ignore[attr-defined]
    return SimpleNamespace(
        response=response,
        followup=followup,
        data={"name": "imagine"},
        id=1,
        type="application_command",
        user=SimpleNamespace(id=2),
        guild_id=3,
        channel_id=4,
        extras={},
    )


async def test_a_user_error_is_answered_with_its_message() -> None:
    ix = interaction()
    command = SimpleNamespace(name="imagine")
    wrapped = app_commands.CommandInvokeError(command, UserError("use a smaller size"))  # type: ignore[arg-type]
    await answer_error(ix, wrapped)
    assert ix.response.sent[0][0] == "⚠️ use a smaller size"
    assert ix.response.sent[0][1]["ephemeral"] is True


async def test_a_refusal_after_defer_goes_to_the_follow_up() -> None:
    ix = interaction(done=True)
    await answer_error(ix, Refused("only admins"))
    assert ix.followup.sent[0][0] == "⚠️ only admins"


async def test_a_bug_is_logged_with_context_and_answered_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ix = interaction()

    async def broken() -> None:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="cogs.errors"):
        await guarded(ix, broken())
    assert ix.response.sent[0][0] == SOMETHING_WENT_WRONG
    assert "secret" not in ix.response.sent[0][0]
    assert "interaction 1 (imagine) by user 2" in caplog.records[0].getMessage()
