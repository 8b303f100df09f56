"""Who may see or post a stored generation where (`bot.gallery.reach`), on a real database."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.gallery import Gallery, Reach, Viewer, reach
from data.generations import Generation
from data.images import ImageStore
from data.repositories import Repositories
from pipeline.errors import UserError
from pipeline.request import GenerationRequest, Mode
from tests.data.conftest import new_images

ALICE, BOB = 1, 2
GUILD, OTHER_GUILD = 10, 11


@pytest.fixture
def gallery(repos: Repositories, tmp_path: Path) -> Gallery:
    return Gallery(repos.generations, repos.favourites, ImageStore(tmp_path / "images"))


async def made(
    repos: Repositories, user_id: int, guild_id: int | None, nsfw: bool = False
) -> Generation:
    """A generation asked for by `user_id` in a guild (None: a DM), in an NSFW channel or not."""
    job = await repos.jobs.create(
        GenerationRequest(prompt="a fox"),
        user_id=user_id,
        guild_id=guild_id,
        channel_id=99,
        channel_nsfw=nsfw,
    )
    await repos.jobs.mark_running(job.id)
    return await repos.generations.create(job.id, new_images(1, label=job.id))


def at(user_id: int, guild_id: int | None, nsfw: bool = False) -> Viewer:
    return Viewer(user_id=user_id, guild_id=guild_id, channel_is_nsfw=nsfw)


async def test_nobody_else_can_show_a_dm_generation_not_even_from_a_dm(
    repos: Repositories, gallery: Gallery
) -> None:
    secret = await made(repos, ALICE, guild_id=None)
    for where in (at(BOB, None), at(BOB, GUILD), at(BOB, None, nsfw=True)):
        with pytest.raises(UserError, match=f"no generation {secret.id} to show"):
            await gallery.to_show(secret.id, where)
    shown, reached = await gallery.to_show(secret.id, at(ALICE, None))
    assert (shown.id, reached) == (secret.id, Reach.PUBLIC)


async def test_an_nsfw_image_is_posted_only_in_nsfw_channels_or_shown_to_its_owner(
    repos: Repositories, gallery: Gallery
) -> None:
    spicy = await made(repos, ALICE, GUILD, nsfw=True)
    assert (await gallery.to_show(spicy.id, at(ALICE, GUILD)))[1] is Reach.PRIVATE
    assert (await gallery.to_show(spicy.id, at(BOB, GUILD, nsfw=True)))[1] is Reach.PUBLIC
    with pytest.raises(UserError, match="no generation"):
        await gallery.to_show(spicy.id, at(BOB, GUILD))
    with pytest.raises(UserError, match=r"use it there \(here you can see it privately"):
        await gallery.result(spicy.id, 0, at(ALICE, GUILD), Reach.PUBLIC)
    with pytest.raises(UserError, match=r"posted only in NSFW channels: use it there$"):
        await gallery.result(spicy.id, 0, at(BOB, GUILD), Reach.PRIVATE)
    with pytest.raises(UserError, match="made in DMs or on another server"):
        await gallery.result(spicy.id, 0, at(BOB, OTHER_GUILD, nsfw=True), Reach.PRIVATE)
    assert (await gallery.result(spicy.id, 0, at(ALICE, GUILD), Reach.PRIVATE)).id == spicy.id


def test_the_rule_for_every_viewer_and_place() -> None:
    def generation(user_id: int, guild_id: int | None, nsfw: bool) -> Generation:
        return Generation(
            1,
            "j",
            user_id,
            guild_id,
            99,
            None,
            Mode.TXT2IMG,
            None,
            GenerationRequest(prompt=""),
            "",
            None,
            (),
            channel_nsfw=nsfw,
        )

    table = [
        # made by, made in, nsfw, viewer, in guild, nsfw channel -> reach
        (ALICE, GUILD, False, BOB, GUILD, False, Reach.PUBLIC),
        (ALICE, GUILD, False, BOB, OTHER_GUILD, False, Reach.NONE),
        (ALICE, GUILD, False, BOB, None, True, Reach.NONE),
        (ALICE, None, False, BOB, None, False, Reach.NONE),
        (ALICE, None, False, ALICE, GUILD, False, Reach.PUBLIC),
        (ALICE, GUILD, True, BOB, GUILD, True, Reach.PUBLIC),
        (ALICE, GUILD, True, BOB, GUILD, False, Reach.NONE),
        (ALICE, GUILD, True, ALICE, GUILD, False, Reach.PRIVATE),
        (ALICE, GUILD, True, ALICE, OTHER_GUILD, True, Reach.PUBLIC),
    ]
    for owner, guild, nsfw, viewer, here, here_nsfw, expected in table:
        got = reach(generation(owner, guild, nsfw), at(viewer, here, here_nsfw))
        assert got is expected, (owner, guild, nsfw, viewer, here, here_nsfw)


async def test_only_an_admin_of_the_server_it_was_made_in_deletes_anothers_generation(
    repos: Repositories, gallery: Gallery
) -> None:
    theirs = await made(repos, ALICE, GUILD)
    with pytest.raises(UserError, match="only the person"):
        gallery.check_delete(theirs, at(BOB, OTHER_GUILD), is_admin=True)
    gallery.check_delete(theirs, at(BOB, GUILD), is_admin=True)
    dm = await made(repos, ALICE, None)
    with pytest.raises(UserError, match="only the person"):
        gallery.check_delete(dm, at(BOB, None), is_admin=True)


async def test_a_published_list_hides_what_its_owner_could_not_post_there(
    repos: Repositories, gallery: Gallery
) -> None:
    plain = await made(repos, ALICE, GUILD)
    spicy = await made(repos, ALICE, GUILD, nsfw=True)
    private = await gallery.page(False, ALICE, 0, 5)
    assert [item.hidden for item in private.items] == [False, False]
    published = await gallery.page(False, ALICE, 0, 5, published=at(ALICE, GUILD))
    shown = {item.generation.id: item for item in published.items}
    assert not shown[plain.id].hidden and shown[plain.id].image_paths
    assert shown[spicy.id].hidden and shown[spicy.id].image_paths == ()
