"""A user's images (`App.gallery`): history, favourites, showing again, deleting, lineage.

Who may see or delete a generation is decided here, once, for every caller (`reach`): its owner
always sees it, privately at least; anyone else only in the server it was made in, never one made
in DMs; and an image made in an NSFW channel is posted only into NSFW channels (or shown
privately to its owner). Ids are sequential, so "not yours" and "does not exist" read the same.
Image files are found through `ImageStore.path_of`, which refuses paths that leave the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from data.favourites import FavouriteRepository
from data.generations import Generation, GenerationRepository, Image
from data.images import ImageStore
from pipeline.errors import UserError

GONE = "this result is no longer available"
NSFW_ONLY = (
    "this image was made in an NSFW channel, so it is posted only in NSFW channels: use it there"
)
SEE_PRIVATELY = " (here you can see it privately with /show id:{id})"
NOT_HERE = "this result was made in DMs or on another server: only the person who asked can use it"


class Reach(IntEnum):
    """How far a generation may be shown to a viewer, where they are."""

    NONE = 0
    PRIVATE = 1
    """Only to them (an ephemeral message): its owner, outside NSFW channels, for NSFW images."""
    PUBLIC = 2
    """Posted in the channel, for everyone there."""


@dataclass(frozen=True)
class Viewer:
    """Who wants to see or post a generation, and where they are."""

    user_id: int
    guild_id: int | None
    channel_is_nsfw: bool


def reach(generation: Generation, viewer: Viewer) -> Reach:
    """The one rule (see the module docstring)."""
    fits_channel = not generation.channel_nsfw or viewer.channel_is_nsfw
    if generation.user_id == viewer.user_id:
        return Reach.PUBLIC if fits_channel else Reach.PRIVATE
    made_here = generation.guild_id is not None and generation.guild_id == viewer.guild_id
    return Reach.PUBLIC if made_here and fits_channel else Reach.NONE


@dataclass(frozen=True)
class Listed:
    """One entry of a list: a generation, and which of its images the entry is about."""

    generation: Generation
    indexes: tuple[int, ...]
    image_paths: tuple[Path, ...]
    hidden: bool = False
    """A published list shows that the entry exists, not what it is (`reach` said no)."""


@dataclass(frozen=True)
class Listing:
    """One page (0-based `number`) of a user's history or favourites."""

    items: tuple[Listed, ...]
    number: int
    has_next: bool
    total: int | None
    """How many entries in all, when known (history counts only up to this page)."""


class Gallery:
    """Reads and changes what users made; every rule about whose it is lives here."""

    def __init__(
        self,
        generations: GenerationRepository,
        favourites: FavouriteRepository,
        images: ImageStore,
    ) -> None:
        self._generations = generations
        self._favourites = favourites
        self._images = images

    def image_path(self, image: Image) -> Path:
        return self._images.path_of(image.path)

    async def result(
        self, generation_id: int, index: int | None, viewer: Viewer, needs: Reach
    ) -> Generation:
        """A generation still shown (with image `index`) that `viewer` may use as far as
        `needs` (a button that posts needs PUBLIC); a UserError otherwise."""
        generation = await self._generations.get(generation_id)
        if generation is None or generation.deleted_at is not None:
            raise UserError(GONE)
        if index is not None and index >= len(generation.images):
            raise UserError(GONE)
        if reach(generation, viewer) < needs:
            raise UserError(_refusal(generation, viewer))
        return generation

    async def to_show(self, generation_id: int, viewer: Viewer) -> tuple[Generation, Reach]:
        """A generation `viewer` may see again, and whether it may be posted or only shown to
        them; the same refusal whether it is missing, deleted or not theirs to see."""
        generation = await self._generations.get(generation_id)
        allowed = Reach.NONE if generation is None else reach(generation, viewer)
        if generation is None or generation.deleted_at is not None or not allowed:
            raise UserError(
                f"there is no generation {generation_id} to show: pick one from /history"
            )
        return generation, allowed

    @staticmethod
    def check_delete(generation: Generation, viewer: Viewer, is_admin: bool) -> None:
        """Only its requester, or an admin of the server it was made in, may delete a
        generation (no I/O: check before acknowledging the click)."""
        admin_here = is_admin and generation.guild_id is not None
        admin_here = admin_here and generation.guild_id == viewer.guild_id
        if viewer.user_id != generation.user_id and not admin_here:
            raise UserError(
                "only the person who asked for these images, or an admin, can delete them"
            )

    async def delete(self, generation: Generation, viewer: Viewer, is_admin: bool) -> None:
        """Hide a generation from history; its favourites go too."""
        self.check_delete(generation, viewer, is_admin)
        await self._generations.mark_deleted(generation.id)

    async def id_for_message(self, message_id: int) -> int | None:
        """The generation posted as message `message_id`, if any (the rules apply after)."""
        return await self._generations.id_for_message(message_id)

    async def set_message(self, generation_id: int, message_id: int) -> None:
        """Remember where a result was posted, so Delete can remove that message."""
        await self._generations.set_message(generation_id, message_id)

    async def toggle_favourite(self, user_id: int, image: Image) -> bool:
        """Star or unstar an image; True if it is now a favourite."""
        return await self._favourites.toggle(user_id, image.id)

    async def favourite_ids(self, user_id: int, generation: Generation) -> set[int]:
        """Which images of `generation` are favourites of `user_id`."""
        favourites = await self._favourites.list(user_id, 0, page_size=1000)
        starred = {favourite.image.id for favourite in favourites}
        return starred & {image.id for image in generation.images}

    async def lineage(self, image: Image) -> list[Image]:
        """The image, its parent, and so on up to the first txt2img."""
        return await self._generations.lineage(image.id)

    async def page(
        self,
        favourites: bool,
        owner_id: int,
        number: int,
        size: int,
        published: Viewer | None = None,
    ) -> Listing:
        """Page `number` of a list, or its last page when the list has become shorter.

        A list `published` in a channel (`Viewer`: its owner, where it is posted) hides the
        entries its owner could not post there, and other people's images made elsewhere.
        """
        while True:
            if favourites:
                listing = await self._favourites_page(owner_id, number, size)
            else:
                listing = await self._history_page(owner_id, number, size)
            if listing.items or number == 0:
                break
            number = 0 if listing.total is None else max(0, (listing.total - 1) // size)
        if published is None:
            return listing
        items = tuple(
            item if reach(item.generation, published) is Reach.PUBLIC else _hidden(item)
            for item in listing.items
        )
        return Listing(items, listing.number, listing.has_next, listing.total)

    async def _history_page(self, owner_id: int, number: int, size: int) -> Listing:
        generations = await self._generations.history(owner_id, limit=(number + 1) * size + 1)
        shown = generations[number * size : (number + 1) * size]
        items = tuple(self._listed(g, tuple(range(len(g.images)))) for g in shown)
        total = len(generations) if len(generations) <= (number + 1) * size else None
        has_next = len(generations) > (number + 1) * size
        return Listing(items, number, has_next, total)

    async def _favourites_page(self, owner_id: int, number: int, size: int) -> Listing:
        total = await self._favourites.count(owner_id)
        favourites = await self._favourites.list(owner_id, number, page_size=size)
        items = []
        for favourite in favourites:
            image = favourite.image
            generation = await self._generations.get(image.generation_id)
            if generation is not None:
                items.append(self._listed(generation, (image.idx,)))
        return Listing(tuple(items), number, (number + 1) * size < total, total)

    def _listed(self, generation: Generation, indexes: tuple[int, ...]) -> Listed:
        paths = tuple(self.image_path(generation.images[i]) for i in indexes)
        return Listed(generation, indexes, paths)


def _refusal(generation: Generation, viewer: Viewer) -> str:
    """Why `reach` says no to a button: the result is already in front of the clicker."""
    if generation.user_id == viewer.user_id:
        return NSFW_ONLY + SEE_PRIVATELY.format(id=generation.id)
    if generation.guild_id is not None and generation.guild_id == viewer.guild_id:
        return NSFW_ONLY
    return NOT_HERE


def _hidden(item: Listed) -> Listed:
    return Listed(item.generation, item.indexes, (), hidden=True)
