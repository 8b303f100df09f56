"""/policy option parsing: what is written to the guild's settings."""

from __future__ import annotations

import pytest

from cogs.admin import describe_policy, parse_words, policy_changes
from pipeline.errors import UserError

LIMIT = 1024 * 1024


def test_words_are_lower_cased_deduplicated_and_none_clears() -> None:
    assert parse_words(" Gore, nude ,gore,, Blood  Bath") == ["gore", "nude", "blood bath"]
    assert parse_words("none") is None
    with pytest.raises(UserError, match="keep the list"):
        parse_words(",".join(f"w{n}" for n in range(201)))


def test_channels_are_added_and_removed_and_an_empty_list_is_removed() -> None:
    assert policy_changes({}, add_channel=5, max_pixels_limit=LIMIT) == {"channels": [5]}
    current = {"channels": [5, 6]}
    assert policy_changes(current, remove_channel=5, max_pixels_limit=LIMIT) == {"channels": [6]}
    assert policy_changes({"channels": [5]}, remove_channel=5, max_pixels_limit=LIMIT) == {
        "channels": None
    }


def test_limits_are_stored_under_the_keys_policy_checks() -> None:
    changes = policy_changes(
        {},
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
        policy_changes({}, max_size="2048x2048", max_pixels_limit=LIMIT)


def test_describe_policy_reads_defaults_in_words() -> None:
    rows = dict(describe_policy({"channels": [1, 2], "cooldown_s": 10}))
    assert rows["channels"] == "<#1>, <#2>"
    assert rows["cooldown"] == "10 s"
    assert rows["max_steps"] == "bot limit"
