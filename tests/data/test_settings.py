"""Guild and user settings as dicts of JSON values."""

from __future__ import annotations

import pytest

from data.repositories import Repositories


async def test_unset_owner_has_empty_settings(repos: Repositories) -> None:
    assert await repos.settings.guild(1) == {}
    assert await repos.settings.user(1) == {}


async def test_set_merges_keys_and_none_removes_one(repos: Repositories) -> None:
    await repos.settings.set_guild(1, {"max_steps": 40, "channels": [10, 11]})
    await repos.settings.set_guild(1, {"nsfw": False, "max_steps": 30})
    assert await repos.settings.guild(1) == {"channels": [10, 11], "max_steps": 30, "nsfw": False}
    await repos.settings.set_guild(1, {"channels": None})
    assert await repos.settings.guild(1) == {"max_steps": 30, "nsfw": False}
    assert await repos.settings.guild(2) == {}


async def test_user_and_guild_settings_are_separate(repos: Repositories) -> None:
    await repos.settings.set_user(1, {"default_size": "768x512", "sampler": {"name": "Euler a"}})
    assert await repos.settings.user(1) == {
        "default_size": "768x512",
        "sampler": {"name": "Euler a"},
    }
    assert await repos.settings.guild(1) == {}


async def test_unencodable_value_writes_nothing(repos: Repositories) -> None:
    with pytest.raises(TypeError):
        await repos.settings.set_user(1, {"ok": 1, "bad": object()})
    assert await repos.settings.user(1) == {}
