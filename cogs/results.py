"""The buttons under a result: upscale, variations, reroll, edit, favourite, info, delete."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot import followups
from bot.requests import build_request
from cogs import buttons
from cogs.checks import is_admin, reply_error
from cogs.errors import answer_error
from pipeline.errors import UserError

if TYPE_CHECKING:
    from bot.discord_bot import DreamcordBot
    from bot.service import Generation

log = logging.getLogger(__name__)

GONE = "this result is no longer available"


class EditModal(discord.ui.Modal, title="Edit and run again"):
    """Midjourney's Remix: change the prompt, keep the other parameters."""

    prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="Prompt", style=discord.TextStyle.paragraph, max_length=4000
    )
    negative: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="Negative prompt", style=discord.TextStyle.paragraph, max_length=4000, required=False
    )

    def __init__(self, cog: Results, generation: Generation) -> None:
        super().__init__(custom_id=f"dc:edit:{generation.id}")
        self.cog = cog
        self.generation = generation
        self.prompt.default = generation.request.prompt[:4000]
        self.negative.default = generation.request.negative[:4000]

    async def on_submit(self, interaction: discord.Interaction[DreamcordBot]) -> None:
        await self.cog.run_edit(
            interaction, self.generation, self.prompt.value, self.negative.value
        )

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[DreamcordBot], error: Exception, /
    ) -> None:
        await answer_error(interaction, error)


class Results(commands.Cog):
    """Answers every result button from the database (see cogs.buttons)."""

    def __init__(self, bot: DreamcordBot) -> None:
        self.bot = bot

    async def on_button(
        self,
        interaction: discord.Interaction[DreamcordBot],
        action: str,
        generation_id: int,
        index: int | None,
    ) -> None:
        generation = await self.bot.service.repos.generations.get(generation_id)
        if generation is None or generation.deleted_at is not None:
            await reply_error(interaction, GONE)
            return
        if index is not None and index >= len(generation.images):
            await reply_error(interaction, GONE)
            return
        handler = {
            buttons.UPSCALE: self._upscale,
            buttons.VARY: self._vary,
            buttons.REROLL: self._reroll,
            buttons.EDIT: self._edit,
            buttons.FAVOURITES: self._favourites,
            buttons.FAVOURITE: self._favourite,
            buttons.INFO: self._info,
            buttons.DELETE: self._delete,
        }[action]
        try:
            await handler(interaction, generation, index or 0)
        except UserError as error:
            await reply_error(interaction, str(error), replace_thinking=True)

    async def _queue(self, interaction: discord.Interaction[DreamcordBot], request) -> None:
        imagine = self.bot.get_cog("Imagine")
        await interaction.response.defer(thinking=True)
        await imagine.submit(interaction, request)  # type: ignore[union-attr]

    async def _upscale(self, interaction, generation: Generation, index: int) -> None:
        image = generation.images[index]
        path = self.bot.service.images.root / image.path
        request = followups.upscale(generation.request, path, image.seed, image.id)
        await self._queue(interaction, request)

    async def _vary(self, interaction, generation: Generation, index: int) -> None:
        image = generation.images[index]
        count = min(4, self.bot.settings.max_images)
        request = followups.variations(generation.request, image.seed, image.id, count=count)
        await self._queue(interaction, request)

    async def _reroll(self, interaction, generation: Generation, index: int) -> None:
        await self._queue(interaction, followups.reroll(generation.request))

    async def _edit(self, interaction, generation: Generation, index: int) -> None:
        await interaction.response.send_modal(EditModal(self, generation))

    async def run_edit(
        self,
        interaction: discord.Interaction[DreamcordBot],
        generation: Generation,
        prompt: str,
        negative: str,
    ) -> None:
        await interaction.response.defer(thinking=True)
        old = generation.request
        explicit = {
            "width": old.width,
            "height": old.height,
            "steps": old.steps,
            "cfg": old.cfg,
            "sampler": old.sampler,
            "schedule": old.schedule,
            "count": old.count,
            "hires": old.hires is not None,
        }
        try:
            built = build_request(
                prompt,
                self.bot.settings,
                negative=negative,
                explicit=explicit,
                known_loras=self.bot.names.loras,
                known_embeddings=self.bot.names.embeddings,
                known_hypernets=self.bot.names.hypernets,
            )
            await self.bot.get_cog("Imagine").submit(interaction, built.request)  # type: ignore[union-attr]
        except UserError as error:
            await reply_error(interaction, str(error), replace_thinking=True)

    async def _favourites(self, interaction, generation: Generation, index: int) -> None:
        if len(generation.images) == 1:
            await self._favourite(interaction, generation, 0)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        chosen = await self._favourite_ids(interaction.user.id, generation)
        await interaction.followup.send(
            "Which images? Click to add or remove.",
            view=buttons.favourite_view(generation, chosen),
            ephemeral=True,
        )

    async def _favourite(self, interaction, generation: Generation, index: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        image = generation.images[index]
        added = await self.bot.service.repos.favourites.toggle(interaction.user.id, image.id)
        verb = "added to" if added else "removed from"
        await interaction.followup.send(
            f"Image {index + 1} (seed {image.seed}) {verb} your favourites.", ephemeral=True
        )

    async def _favourite_ids(self, user_id: int, generation: Generation) -> set[int]:
        favourites = await self.bot.service.repos.favourites.list(user_id, 0, page_size=1000)
        return {favourite.image.id for favourite in favourites} & {i.id for i in generation.images}

    async def _info(self, interaction, generation: Generation, index: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        image = generation.images[0]
        lineage = await self.bot.service.repos.generations.lineage(image.id)
        seeds = ", ".join(str(i.seed) for i in generation.images)
        parts = [
            f"Generation {generation.id} · seeds {seeds}",
            "```",
            image.parameters[:1500],
            "```",
        ]
        if len(lineage) > 1:
            chain = " ← ".join(f"image {ancestor.id}" for ancestor in lineage)
            parts.append(f"Lineage: {chain}")
        await interaction.followup.send("\n".join(parts), ephemeral=True)

    async def _delete(self, interaction, generation: Generation, index: int) -> None:
        if interaction.user.id != generation.user_id and not is_admin(
            interaction, self.bot.settings
        ):
            raise UserError(
                "only the person who asked for these images, or an admin, can delete them"
            )
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.service.repos.generations.mark_deleted(generation.id)
        if interaction.message is not None:
            try:
                await interaction.message.delete()
            except discord.HTTPException as error:
                log.warning(
                    "could not delete the message of generation %s: %s", generation.id, error
                )
        await interaction.followup.send(
            "Deleted. The images stay in your /history.", ephemeral=True
        )
