"""A user's images (`App.gallery`): history, favourites, showing again, deleting, lineage.

Who may see or delete a generation is decided here, once, for every caller; image files are
found through `ImageStore.path_of`, which refuses paths that leave the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data.favourites import FavouriteRepository
from data.generations import Generation, GenerationRepository, Image
from data.images import ImageStore
from pipeline.errors import UserError

GONE = "this result is no longer available"


@dataclass(frozen=True)
class Listed:
    """One entry of a list: a generation, and which of its images the entry is about."""

    generation: Generation
    indexes: tuple[int, ...]
    image_paths: tuple[Path, ...]


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

    async def result(self, generation_id: int, index: int | None = None) -> Generation:
        """A generation that is still shown (with image `index`); a UserError if gone."""
        generation = await self._generations.get(generation_id)
        if generation is None or generation.deleted_at is not None:
            raise UserError(GONE)
        if index is not None and index >= len(generation.images):
            raise UserError(GONE)
        return generation

    async def to_show(self, generation_id: int, user_id: int, guild_id: int | None) -> Generation:
        """A generation `user_id` may post again: their own, or one made on this server."""
        generation = await self._generations.get(generation_id)
        mine = generation is not None and generation.user_id == user_id
        if (
            generation is None
            or generation.deleted_at is not None
            or not (mine or generation.guild_id == guild_id)
        ):
            raise UserError(
                f"there is no generation {generation_id} to show: pick one from /history"
            )
        return generation

    @staticmethod
    def check_delete(generation: Generation, user_id: int, is_admin: bool) -> None:
        """Only its requester or an admin may delete a generation (no I/O: check before
        acknowledging the click)."""
        if user_id != generation.user_id and not is_admin:
            raise UserError(
                "only the person who asked for these images, or an admin, can delete them"
            )

    async def delete(self, generation: Generation, user_id: int, is_admin: bool) -> None:
        """Hide a generation from history; its favourites go too."""
        self.check_delete(generation, user_id, is_admin)
        await self._generations.mark_deleted(generation.id)

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

    async def page(self, favourites: bool, owner_id: int, number: int, size: int) -> Listing:
        """Page `number` of a list, or its last page when the list has become shorter."""
        while True:
            if favourites:
                listing = await self._favourites_page(owner_id, number, size)
            else:
                listing = await self._history_page(owner_id, number, size)
            if listing.items or number == 0:
                return listing
            number = 0 if listing.total is None else max(0, (listing.total - 1) // size)

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
