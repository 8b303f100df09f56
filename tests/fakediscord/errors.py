"""Discord's JSON errors: the exception a handler raises, and the codes the fake answers with.

A bot branches on these codes (10062 drop the interaction, 50027 fall back to the bot token), so
the fake returns Discord's numbers, not generic HTTP errors.
"""

from __future__ import annotations

UNAUTHORIZED = 0  # Discord's 401 body carries code 0
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
UNKNOWN_COMMAND = 10063
REQUEST_TOO_LARGE = 40005
ALREADY_ACKNOWLEDGED = 40060
MISSING_ACCESS = 50001
CANNOT_EDIT_OTHERS_MESSAGE = 50005
EMPTY_MESSAGE = 50006
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035


class DiscordError(Exception):
    """Raised inside a handler; the REST middleware answers with Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid_form_body(detail: str) -> DiscordError:
    """The 400 / 50035 Discord gives for a payload that breaks one of its limits."""
    return DiscordError(400, INVALID_FORM_BODY, f"Invalid Form Body: {detail}")
