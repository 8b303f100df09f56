"""One way from what a user asked to a `GenerationRequest` (`App.requests`).

`/imagine`, the CLI-like options of every button (Reroll, Variations, Upscale, Edit), styles and
saved defaults all end in `RequestBuilder`: it reads the user's and the server's saved layers,
applies the `lora`, `model` and `style` options, and hands the layers to `build_request`, whose
precedence rules hold for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any

from bot import followups
from bot.catalog import ModelCatalog
from bot.controls import ControlModels, tile_model
from bot.defaults import UserDefaults
from bot.gallery import Gallery, Reach, Viewer
from bot.guild import GuildRules
from bot.library import LoraLibrary
from bot.names import KnownNames
from bot.recipes import RecipeReader
from bot.requests import build_request, prompt_limits, with_image_prompts
from bot.settings import Settings
from bot.styles import apply_style, find_style
from bot.uploads import InitImage, Uploads, check_picture_size
from data.generations import Generation
from data.images import ImageStore
from pipeline.errors import UserError
from pipeline.prompt.suggestions import index_of
from pipeline.prompt.tags import extract_tags
from pipeline.recipe import Recipe
from pipeline.request import EDIT_MODES, GenerationRequest, LoraRef, Mode
from pipeline.sizes import parse_size

DEFAULT_STRENGTH = 0.6
"""Image to image moves this far from the picture unless the user says otherwise."""
KEPT_FIELDS = (
    "width",
    "height",
    "steps",
    "cfg",
    "sampler",
    "schedule",
    "count",
    "clip_skip",
    "rng",
    "ensd",
)
"""What an Edit keeps of the request it edits, besides the model and highres fix."""
_MESSAGE_LINK = re.compile(
    r"<?https://(?:ptb\.|canary\.)?discord(?:app)?\.com/channels/(?:\d+|@me)/\d+/(\d+)>?"
)
"""A message link as Discord's Copy Message Link gives it; the last number is the message."""
BLEND_DIMENSIONS = {"square": "512x512", "portrait": "512x768", "landscape": "768x512"}
"""Midjourney's /blend dimensions (1:1, 2:3, 3:2) at SD1.5's trained sizes."""


@dataclass(frozen=True)
class Choices:
    """The prompt, negative and server layer after the `lora` and `style` options."""

    prompt: str
    negative: str | None
    server: dict[str, Any]
    loras: tuple[LoraRef, ...]


def kept_options(base: GenerationRequest) -> dict[str, Any]:
    """The options of `base` that an edit of it keeps: everything but prompt and seed."""
    options: dict[str, Any] = {key: getattr(base, key) for key in KEPT_FIELDS}
    options["model"] = base.model
    options["hires"] = base.hires is not None
    if base.hires is not None:
        options.update(
            hires_scale=base.hires.scale,
            hires_steps=base.hires.steps,
            hires_denoise=base.hires.denoise,
            hires_upscaler=base.hires.upscaler,
        )
    return options


class RequestBuilder:
    """Composes requests from text, options and the saved layers (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        guild: GuildRules,
        defaults: UserDefaults,
        catalog: ModelCatalog,
        names: KnownNames,
        loras: LoraLibrary,
        images: ImageStore,
        recipes: RecipeReader,
        uploads: Uploads,
        gallery: Gallery | None = None,
        controlnets: ControlModels | None = None,
    ) -> None:
        self.settings = settings
        self._controlnets = controlnets
        self._gallery = gallery
        self.uploads = uploads
        self.names = names
        self._recipes = recipes
        self._guild = guild
        self._defaults = defaults
        self._catalog = catalog
        self._loras = loras
        self._images = images

    async def compose(
        self,
        text: str,
        options: Mapping[str, Any],
        user_id: int,
        guild_id: int | None,
        base: GenerationRequest | None = None,
        recipe: Recipe | None = None,
    ) -> GenerationRequest:
        """The request for `text` with `options` (slash-command options; None: not given).

        `base` is the request an Edit starts from: its options are kept unless given again,
        and its ControlNet units too unless an `init` picture is given (an image edit's canvas
        no longer matches their maps). `options` may carry an `init` picture (`hold_picture`)
        and its `strength`, and held `image_prompts` and `style_references` (lists of
        pictures). A pasted `recipe` (`read_recipe`) lies under the options and prompt flags.
        """
        if recipe is not None:
            text = text if recipe.prompt is None else recipe.prompt
            if recipe.negative is not None:
                options = {**options, "negative": recipe.negative}
            if options.get("strength") is None and recipe.strength is not None:
                options = {**options, "strength": recipe.strength}
        explicit = {key: value for key, value in options.items() if value is not None}
        if base is not None:
            explicit = {**kept_options(self.continued(base)), **explicit}
        negative = explicit.pop("negative", None)
        init: InitImage | None = explicit.pop("init", None)
        pictures: list[InitImage] = explicit.pop("image_prompts", [])
        styles: list[InitImage] = explicit.pop("style_references", [])
        strength = explicit.pop("strength", None)
        size = explicit.pop("size", None)
        if size:
            explicit["width"], explicit["height"] = parse_size(size, self.settings.max_pixels)
        elif init is not None:
            explicit["width"], explicit["height"] = init.width, init.height
        if explicit.get("model") and base is None:
            explicit["model"] = self._catalog.check(explicit["model"])
        user = await self._defaults.saved(user_id)
        server = (await self._guild.settings(guild_id)).request_layer()
        if "model" in server and self._catalog.known(server["model"]) is None:
            del server["model"]  # no longer configured: the bot's default is used
        choices = await self._apply_choices(text, negative, explicit, user, server, guild_id)
        built = build_request(
            choices.prompt,
            self.settings,
            negative=choices.negative,
            explicit=explicit,
            user=user,
            server=choices.server,
            known_loras=self.names.loras,
            known_embeddings=self.names.embeddings,
            known_hypernets=self.names.hypernets,
            extra_loras=choices.loras,
            pasted=recipe.options if recipe else None,
        )
        content: list[tuple[str, float | None]] = [(str(p.path), None) for p in pictures]
        style_paths = [str(style.path) for style in styles]
        if base is not None and not (pictures or styles):
            # An Edit (Remix) keeps the pictures it started from; a new --iw reweights them.
            reweighted = built.image_weight is not None
            kept = base.image_prompts
            content += [(p.image, None if reweighted else p.weight) for p in kept if not p.style]
            style_paths += [p.image for p in kept if p.style]
        if built.sref is not None:
            style_paths.append(await self._find_sref(built.sref, user_id, guild_id))
        request = with_image_prompts(built, content, style_paths)
        if init is None:
            return request if base is None else replace(request, controls=base.controls)
        return replace(
            request,
            mode=Mode.IMG2IMG,
            init_image=str(init.path),
            strength=strength or DEFAULT_STRENGTH,
        )

    async def _find_sref(self, value: str, user_id: int, guild_id: int | None) -> str:
        """The stored image `--sref` names, when the user may see it: their own, or one made
        on this server in a channel that is not NSFW (the gallery's rule, as for /show).

        `ID` is image 1 of generation ID, `ID:N` its image N; a link to a result message
        (Copy Message Link) is its image 1.
        """
        if self._gallery is None:
            raise UserError("--sref needs the gallery, which only the Discord bot has")
        link = _MESSAGE_LINK.fullmatch(value)
        ident, _, number = value.partition(":")
        if link is not None:
            found = await self._gallery.id_for_message(int(link[1]))
            if found is None:
                raise UserError(f"--sref {value[:80]}: that message is no Dreamcord result")
            generation_id, index = found, 0
        elif ident.isdigit() and (number or "1").isdigit() and int(number or 1) >= 1:
            generation_id, index = int(ident), int(number or 1) - 1
        else:
            raise UserError(
                f"--sref {value[:40]}: name an earlier image by its id from /history, such as "
                "--sref 12 (or --sref 12:3 for its third image), or a result's message link, "
                "or attach a style_reference"
            )
        viewer = Viewer(user_id, guild_id, channel_is_nsfw=False)
        generation = await self._gallery.result(generation_id, index, viewer, Reach.PRIVATE)
        return str(self._gallery.image_path(generation.images[index]))

    async def read_recipe(
        self, parameters: str, text: str | None, options: Mapping[str, Any]
    ) -> Recipe:
        """A pasted A1111 recipe under the options given with it, read off the event loop
        (finding its files by hash may read them); a UserError names the field to fix."""
        given = {**options, "prompt": text}
        if size := options.get("size"):
            given["width"], given["height"] = parse_size(size, self.settings.max_pixels)
        return await asyncio.to_thread(self._recipes.read, parameters, given)

    @staticmethod
    def check_picture(size: int) -> None:
        """Refuse a picture for image to image by its size, before downloading it."""
        check_picture_size(size)

    def hold_picture(self, data: bytes | None) -> AbstractAsyncContextManager[InitImage | None]:
        """Keep a picture for image to image now (upload links expire), sized to fit, for the
        request composed and queued in the `async with` block; kept after it only if queued.
        Without `data` (no picture) the block gets None."""
        return self.uploads.held(data)

    @contextlib.asynccontextmanager
    async def hold_pictures(self, pictures: Sequence[bytes]) -> AsyncIterator[list[InitImage]]:
        """`hold_picture` for several pictures (image prompts, style references) at once."""
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(self.uploads.held(data)) for data in pictures]
            yield [picture for picture in held if picture is not None]

    def continued(self, request: GenerationRequest) -> GenerationRequest:
        """`request` as what starts from its result continues it: an edit's mask and label
        left behind (`followups.without_edit`), and its model the one the user chose, not the
        inpainting companion the edit ran on (which draws nothing without a mask)."""
        if request.mode not in EDIT_MODES:
            return request
        return replace(followups.without_edit(request), model=self._catalog.base_of(request.model))

    def companion(self, request: GenerationRequest) -> GenerationRequest:
        """An edit's `request` on its model's inpainting companion, when it has one."""
        return replace(request, model=self._catalog.companion_of(request.model) or request.model)

    def upscale(self, generation: Generation, index: int) -> GenerationRequest:
        """The U button: image `index` at twice the size, refined at low denoise."""
        image = generation.images[index]
        path = self._images.path_of(image.path)
        return followups.upscale(self.continued(generation.request), path, image.seed, image.id)

    async def tiled_upscale(
        self, generation: Generation, index: int, factor: int, mode: str, guild_id: int | None
    ) -> GenerationRequest:
        """Upscale 2x Subtle / 2x Creative / 4x: image `index` by `factor` in blended tiles,
        with the server's steps, denoise and tile size (`/policy set`), guided by the
        library's ControlNet tile model when one is enabled."""
        image = generation.images[index]
        path = self._images.path_of(image.path)
        choices = (await self._guild.settings(guild_id)).tiled_upscale()
        request = self.continued(generation.request)
        tiled = followups.tiled_upscale(request, path, image.seed, image.id, factor, mode, choices)
        models = await self._controlnets.list() if self._controlnets is not None else []
        return followups.with_tile_control(tiled, tile_model(models))

    def vary(self, generation: Generation, index: int) -> GenerationRequest:
        """The V button: variations around image `index`'s seed."""
        image = generation.images[index]
        count = min(4, self.settings.max_images)
        request = self.continued(generation.request)
        return followups.variations(request, image.seed, image.id, count=count)

    def reroll(self, generation: Generation) -> GenerationRequest:
        """The Reroll button: the same request with new seeds."""
        return followups.reroll(generation.request)

    async def _apply_choices(
        self,
        prompt: str,
        negative: str | None,
        explicit: dict[str, Any],
        user: Mapping[str, Any],
        server: dict[str, Any],
        guild_id: int | None,
    ) -> Choices:
        """Pop "lora", "lora_weight" and "style" from `explicit` and apply them.

        The LoRA option is read as a `<lora:name:weight>` tag would be (same checks, same "did
        you mean"), its weight defaulting to the LoRA's own.
        """
        loras: tuple[LoraRef, ...] = ()
        name, weight = explicit.pop("lora", None), explicit.pop("lora_weight", None)
        if name:
            known = self.names.loras
            if weight is None and index_of(known).find(name.strip()) is not None:
                weight = (await self._loras.info(name)).default_weight
            tag = f"<lora:{name.strip()}:{1.0 if weight is None else weight:g}>"
            scan = extract_tags(tag, known, prompt_limits(self.settings))
            if scan.errors:
                raise UserError(scan.errors[0])
            loras = scan.loras
        style_name = explicit.pop("style", None)
        if not style_name:
            return Choices(prompt, negative, server, loras)
        styles = (await self._guild.settings(guild_id)).styles
        styled = apply_style(
            find_style(styles, style_name),
            prompt,
            negative,
            user=user,
            server=server,
            default_negative=self.settings.default_negative,
            known_loras=self.names.loras,
        )
        # The lora option wins over the style's own weight for the same LoRA.
        chosen = {ref.name.lower(): ref for ref in (*styled.loras, *loras)}
        return Choices(styled.prompt, styled.negative, styled.server, tuple(chosen.values()))
