"""Masked passes: repaint the white part of a mask and keep the rest, as A1111's img2img does.

In pixels (`prepare_edit`, `paste_back`): the mask is blurred; with "only masked" the pass works
on the mask's bounding box grown by the padding and stretched to the pass size; the result goes
back over the picture through the blurred mask doubled (A1111's overlay), so a pixel the blurred
mask does not reach keeps its exact bytes.

In latents (`MaskedLatents`): at every denoiser call the prediction is bent so that, outside the
mask, the denoised latents are the picture's own, as A1111's CFGDenoiser blends its denoised
latents with the init latents. That blend is written on the noise prediction, so it holds for
every sampler the engine drives: each one denoises as x - sigma x eps. An inpainting UNet
(9 input channels) also reads the latent mask and the masked picture's latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageFilter

from pipeline.canvas import MASK_THRESHOLD, REPAINT, prepare_mask
from pipeline.request import GenerationRequest, Mode

if TYPE_CHECKING:
    from pipeline.schedules import DiscreteSigmas

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class EditPicture:
    """One task's edit in pixels: what its pass paints, and how the result goes back."""

    picture: Image.Image
    """The whole picture (RGB, the request's size): the canvas the result is pasted onto."""
    overlay: Image.Image
    """How much of the result each pixel of the picture takes ("L"; 0 keeps it exactly)."""
    work: Image.Image
    """What the pass starts from, at the pass's size: the picture, or its crop."""
    work_mask: Image.Image
    """The blurred mask at the pass's size ("L", 255 repaints)."""
    box: Box | None = None
    """With "only masked": the part of the picture the pass works on."""


def prepare_edit(request: GenerationRequest, size: tuple[int, int]) -> EditPicture:
    """The request's picture and mask, ready for a pass of `size` (width, height)."""
    from pipeline.engine import load_init_image
    from pipeline.png import open_image

    assert request.mask_image is not None
    picture = load_init_image(request)
    mask, _ = prepare_mask(open_image(Path(request.mask_image)), picture.size)
    spec = request.inpaint_spec
    blurred = blur_mask(mask, spec.mask_blur)
    overlay = blurred.point(lambda value: min(REPAINT, 2 * value))
    if spec.area != "masked":
        return EditPicture(picture, overlay, picture, blurred)
    box = crop_box(blurred, spec.padding, size)
    work = picture.crop(box).resize(size, Image.Resampling.LANCZOS)
    work_mask = blurred.crop(box).resize(size, Image.Resampling.LANCZOS)
    return EditPicture(picture, overlay, work, work_mask, box)


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    """The mask's edge softened by a Gaussian of standard deviation `radius` pixels."""
    if radius <= 0:
        return mask
    return mask.filter(ImageFilter.GaussianBlur(radius))


def crop_box(mask: Image.Image, padding: int, size: tuple[int, int]) -> Box:
    """The mask's bounding box grown by `padding`, then to the aspect of `size`, in the picture.

    It grows about its centre, and shifts back inside where it would leave the picture; it
    never grows past the picture itself.
    """
    found = mask.getbbox()
    assert found is not None  # prepare_mask refuses an empty mask
    left, top, right, bottom = found
    width, height = mask.size
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(width, right + padding), min(height, bottom + padding)
    aspect = size[0] / size[1]
    box_width, box_height = right - left, bottom - top
    if box_width / box_height < aspect:
        box_width = min(width, round(box_height * aspect))
    else:
        box_height = min(height, round(box_width / aspect))
    left = _fit_span((left + right) / 2, box_width, width)
    top = _fit_span((top + bottom) / 2, box_height, height)
    return left, top, left + box_width, top + box_height


def _fit_span(centre: float, length: int, limit: int) -> int:
    """The start of a span of `length` about `centre`, moved to lie within 0..`limit`."""
    start = round(centre - length / 2)
    return min(max(0, start), limit - length)


def paste_back(edit: EditPicture, result: Image.Image) -> Image.Image:
    """The pass's result over the picture, through the overlay."""
    if edit.box is not None:
        left, top, right, bottom = edit.box
        whole = edit.picture.copy()
        whole.paste(result.resize((right - left, bottom - top), Image.Resampling.LANCZOS), edit.box)
        result = whole
    return Image.composite(result.convert("RGB"), edit.picture, edit.overlay)


@dataclass(frozen=True)
class MaskedLatents:
    """A group's masked pass in latent space, one row per task."""

    init: torch.Tensor
    """The work pictures' latents (after the fill)."""
    keep: torch.Tensor
    """(n, 1, h, w): 1 where the picture's latents stay, 0 where the pass repaints."""
    unet_extra: torch.Tensor | None
    """For an inpainting UNet: the latent mask and the masked picture's latents, (n, 5, h, w)."""

    def filled(self, fill: str, noise: torch.Tensor) -> MaskedLatents:
        """The masked latents replaced as the request's fill asks: "latent noise" by the
        image's own starting noise (A1111 draws it from the same seeds), "latent nothing" by 0."""
        if fill == "latent noise":
            return replace(self, init=self.init * self.keep + noise * (1 - self.keep))
        if fill == "latent nothing":
            return replace(self, init=self.init * self.keep)
        return self

    def blend(self, eps: torch.Tensor, model_input: torch.Tensor, sigma: float) -> torch.Tensor:
        """The noise prediction whose denoised latents, x - sigma x eps, are the picture's own
        where it is kept and the model's where it is repainted.

        `model_input` is the UNet's input, x / sqrt(sigma^2 + 1), whatever the sampler.
        """
        x = model_input * math.sqrt(sigma**2 + 1)
        kept = (x - self.init) / sigma
        return eps + self.keep * (kept - eps)


def encode_edits(
    edits: Sequence[EditPicture],
    encode: Callable[[torch.Tensor], torch.Tensor],
    inpainting_unet: bool,
) -> MaskedLatents:
    """The group's masked latents; `encode` turns pixels in -1..1 into scaled latents."""
    pixels = torch.cat([_pixels(edit.work) for edit in edits])
    init = encode(pixels)
    repaint = torch.cat([latent_mask(edit.work_mask, init.shape[-2:]) for edit in edits])
    repaint = repaint.to(init.device, init.dtype)
    extra = None
    if inpainting_unet:
        # A1111 and diffusers agree: the masked picture is grey (0) under the rounded mask.
        full = torch.cat([_binary(edit.work_mask) for edit in edits]).to(pixels.dtype)
        masked = encode(pixels * (1 - full))
        extra = torch.cat([repaint, masked.to(init.dtype)], dim=1)
    return MaskedLatents(init, 1 - repaint, extra)


def latent_mask(mask: Image.Image, size: Sequence[int]) -> torch.Tensor:
    """The mask at latent size (h, w), rounded to 0 or 1, as A1111 rounds its latent mask."""
    small = mask.resize((int(size[1]), int(size[0])), Image.Resampling.BICUBIC)
    return _binary(small)


def _binary(mask: Image.Image) -> torch.Tensor:
    """(1, 1, h, w) of 1 where the mask repaints (at least half white), else 0."""
    values = torch.frombuffer(bytearray(mask.convert("L").tobytes()), dtype=torch.uint8)
    return (values >= MASK_THRESHOLD).float().view(1, 1, mask.height, mask.width)


def _pixels(image: Image.Image) -> torch.Tensor:
    """(1, 3, h, w) in -1..1, as the VAE reads pixels."""
    values = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return (values.float() / 127.5 - 1).view(1, image.height, image.width, 3).permute(0, 3, 1, 2)


def call_sigma(scheduler: Any, timestep: Any, sigmas: DiscreteSigmas) -> float:
    """The sigma of a UNet call: from the input scaling of the samplers that scale it by
    1 / sqrt(sigma^2 + 1), else (the samplers that step in the model's own space) from the
    timestep, which is then the model's."""
    one = torch.ones((), dtype=torch.float32)
    scale = float(scheduler.scale_model_input(one, timestep))
    if abs(scale - 1) > 1e-6:
        return math.sqrt(1 / scale**2 - 1)
    return float(sigmas.t_to_sigma(torch.as_tensor(timestep).cpu().reshape(1))[0])


def work_size(request: GenerationRequest) -> tuple[int, int]:
    """The size a masked pass runs at: the request's, or with "only masked" about SD1.5's
    512x512 pixels at the request's aspect, so a crop is drawn at the model's native size."""
    from pipeline.sizes import size_for_ratio

    if request.mode in (Mode.INPAINT, Mode.OUTPAINT) and request.inpaint_spec.area == "masked":
        return size_for_ratio(request.width, request.height)
    return request.width, request.height
