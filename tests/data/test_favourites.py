"""Favourites: toggling and pages, newest first."""

from __future__ import annotations

import pytest

from data.repositories import Repositories
from pipeline.errors import UserError
from tests.data.conftest import finished_generation


async def test_toggle_returns_the_new_state(repos: Repositories) -> None:
    generation = await finished_generation(repos)
    image_id = generation.images[0].id
    assert await repos.favourites.toggle(1, image_id) is True
    assert await repos.favourites.count(1) == 1
    assert await repos.favourites.toggle(1, image_id) is False
    assert await repos.favourites.count(1) == 0
    assert await repos.favourites.toggle(1, image_id) is True


async def test_favourites_are_per_user(repos: Repositories) -> None:
    generation = await finished_generation(repos)
    await repos.favourites.toggle(1, generation.images[0].id)
    await repos.favourites.toggle(2, generation.images[0].id)
    await repos.favourites.toggle(1, generation.images[0].id)
    assert await repos.favourites.count(1) == 0
    assert [f.image.id for f in await repos.favourites.list(2)] == [generation.images[0].id]


async def test_list_pages_newest_first(repos: Repositories) -> None:
    generation = await finished_generation(repos, count=5)
    ids = [image.id for image in generation.images]
    for image_id in (ids[2], ids[0], ids[4], ids[1], ids[3]):
        await repos.favourites.toggle(1, image_id)
    first = await repos.favourites.list(1, page=0, page_size=2)
    assert [f.image.id for f in first] == [ids[3], ids[1]]
    assert first[0].favourited_at >= first[1].favourited_at
    assert [f.image.id for f in await repos.favourites.list(1, page=2, page_size=2)] == [ids[2]]
    assert await repos.favourites.list(1, page=3, page_size=2) == []


async def test_refavouriting_moves_an_image_to_the_top(repos: Repositories) -> None:
    generation = await finished_generation(repos, count=2)
    a, b = (image.id for image in generation.images)
    for image_id in (a, b, a, a):
        await repos.favourites.toggle(1, image_id)
    assert [f.image.id for f in await repos.favourites.list(1)] == [a, b]


async def test_unknown_or_deleted_image_is_a_user_error(repos: Repositories) -> None:
    generation = await finished_generation(repos)
    await repos.generations.mark_deleted(generation.id)
    with pytest.raises(UserError, match="no longer exists"):
        await repos.favourites.toggle(1, generation.images[0].id)
    with pytest.raises(UserError, match="no longer exists"):
        await repos.favourites.toggle(1, 424242)
