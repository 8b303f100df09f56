"""Which encodings each denoiser call uses, and how AND parts combine: A1111's CFGDenoiser.

A1111 counts its denoiser calls from 0 in each pass (Heun's second call of a step counts too) and
takes, for each prompt, the first schedule entry whose last step the count has not passed
(`reconstruct_cond_batch`). Each AND part gets a UNet prediction of its own, and the guided result
is the negative's prediction plus, for each part, (part - negative) x weight x CFG
(`combine_denoised`). A1111 combines k-diffusion's denoised latents; those are linear in the
noise prediction, so the same sum over noise predictions is the same step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from pipeline.prompt.editing import Schedule
    from pipeline.prompt.schedule import PassPlan

Encodings = tuple[tuple[int, "torch.Tensor"], ...]
"""One schedule encoded: (last call, encoding of shape (1, tokens, width)) in call order."""


@dataclass(frozen=True)
class ImageConditioning:
    """One image's encodings over one pass: its negative's, and each AND part's with its weight.

    The parts share one length, padded as A1111 stacks them; the negative keeps its own length,
    as A1111 runs cond and uncond at their own lengths by default.
    """

    uncond: Encodings
    parts: tuple[tuple[float, Encodings], ...]

    @property
    def lengths(self) -> tuple[int, int]:
        """(prompt, negative) tokens: images batch together only where both are equal."""
        return self.parts[0][1][0][1].shape[1], self.uncond[0][1].shape[1]


def condition_image(plan: PassPlan, encode: Callable[[Schedule], Encodings]) -> ImageConditioning:
    """Encode one image's pass plan; `encode` turns one schedule into its encodings."""
    parts = [(part.weight, encode(part.schedule)) for part in plan.prompt.parts]
    length = max(encoding.shape[1] for _, encodings in parts for _, encoding in encodings)
    padded = tuple(
        (weight, tuple((last, _padded(encoding, length)) for last, encoding in encodings))
        for weight, encodings in parts
    )
    return ImageConditioning(encode(plan.negative.parts[0].schedule), padded)


def _padded(encoding: torch.Tensor, length: int) -> torch.Tensor:
    """An AND part made `length` tokens long by repeating its last vector (A1111's stack_conds)."""

    missing = length - encoding.shape[1]
    if not missing:
        return encoding
    return torch.cat([encoding, encoding[:, -1:].expand(-1, missing, -1)], dim=1)


def at_call(encodings: Encodings, call: int) -> torch.Tensor:
    """The encoding for denoiser call `call`, counted from 0; past the end A1111 takes the first."""
    return next((encoding for last, encoding in encodings if call <= last), encodings[0][1])


class UnetAddition(Protocol):
    """More that the UNet takes at a call, row by row: ControlNet residuals, image prompts."""

    def unet_kwargs(
        self,
        sample: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        owners: torch.Tensor,
        call: int,
        negative: torch.Tensor,
    ) -> dict[str, Any]:
        """Keyword arguments for the UNet call on these rows (empty: nothing at this call).

        `sample` is the UNet's input (an inpainting model's extra channels included), `context`
        each row's text encoding, `owners[i]` the group's image that row i belongs to (the
        prompt's and the negative's rows of one image share an owner), `call` the denoiser
        call counted from 0 in the pass, `negative[i]` whether row i is the negative prompt's
        (an image prompt gives those rows its "no image" embedding).
        """
        ...


class Guidance:
    """A group's conditioning over one pass: the guided noise prediction at each denoiser call.

    The UNet sees at most twice the group's size at once, as without AND parts, so the memory a
    batch needs stays what the planner expects. `additions` add their keyword arguments to
    every UNet call.
    """

    def __init__(
        self,
        images: Sequence[ImageConditioning],
        cfg: float,
        device: torch.device,
        dtype: torch.dtype,
        additions: Sequence[UnetAddition] = (),
    ) -> None:
        def moved(encodings: Encodings) -> Encodings:
            return tuple((last, e.to(device=device, dtype=dtype)) for last, e in encodings)

        self._unconds = [moved(image.uncond) for image in images]
        self._parts = [moved(encodings) for image in images for _, encodings in image.parts]
        self._scales = [
            (i, weight * cfg) for i, image in enumerate(images) for weight, _ in image.parts
        ]
        self._owners = torch.tensor([owner for owner, _ in self._scales], device=device)
        self._additions = tuple(additions)

    def predict(
        self,
        unet: Any,
        latents: torch.Tensor,
        timestep: Any,
        call: int,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The guided noise prediction for scaled `latents` at denoiser call `call`.

        `extra` (one row per image) is concatenated to each row's channels, for both the prompt
        and the negative: an inpainting UNet's mask and masked-picture latents.
        """

        uncond = torch.cat([at_call(encodings, call) for encodings in self._unconds])
        cond = torch.cat([at_call(encodings, call) for encodings in self._parts])
        if extra is not None:
            latents = torch.cat([latents, extra.to(latents.dtype)], dim=1)
        inputs = latents.index_select(0, self._owners)
        images = torch.arange(len(latents), device=self._owners.device)
        most = 2 * len(latents)
        if uncond.shape[1] == cond.shape[1]:
            rows = torch.cat([latents, inputs])
            owners = torch.cat([images, self._owners])
            negative = torch.arange(len(rows), device=owners.device) < len(latents)
            context = torch.cat([uncond, cond])
            both = self._unet(unet, rows, timestep, context, owners, negative, call, most)
            on_uncond, on_cond = both[: len(latents)], both[len(latents) :]
        else:
            yes = torch.ones_like(images, dtype=torch.bool)
            no = torch.zeros_like(self._owners, dtype=torch.bool)
            on_uncond = self._unet(unet, latents, timestep, uncond, images, yes, call, most)
            on_cond = self._unet(unet, inputs, timestep, cond, self._owners, no, call, most)
        guided = on_uncond.clone()
        for row, (owner, scale) in enumerate(self._scales):
            guided[owner] += (on_cond[row] - on_uncond[owner]) * scale
        return guided

    def _unet(
        self,
        unet: Any,
        latents: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        owners: torch.Tensor,
        negative: torch.Tensor,
        call: int,
        most: int,
    ) -> torch.Tensor:
        """The UNet's noise prediction for each row, at most `most` rows a call."""

        predictions = []
        for start in range(0, len(latents), most):
            rows = slice(start, start + most)
            kwargs: dict[str, Any] = {}
            for addition in self._additions:
                kwargs |= addition.unet_kwargs(
                    latents[rows], timestep, context[rows], owners[rows], call, negative[rows]
                )
            predictions.append(
                unet(latents[rows], timestep, encoder_hidden_states=context[rows], **kwargs).sample
            )
        return torch.cat(predictions)
