"""`dreamcord generate`'s edits of an --init picture: --mask, --outpaint, --zoom-out, --pan and
--square, each turned into a canvas and a mask (pipeline/canvas.py) for one masked pass.

The canvas and mask are written into a scratch folder that lives as long as the command, so a
finished or refused edit leaves no file behind.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from bot.models import companion_of, model_sources
from bot.settings import Settings
from pipeline import canvas
from pipeline.errors import UserError
from pipeline.png import open_image
from pipeline.request import GenerationRequest, InpaintSpec, Mode

EDITS = ("mask", "outpaint", "zoom_out", "pan", "square")
"""The edit flags, by their argparse names; at most one per command, each needs --init."""
MASK_OPTIONS = ("mask_blur", "inpaint_area", "padding", "fill")
FILLS = {"original": "original", "noise": "latent noise", "nothing": "latent nothing"}
"""--fill's short names for A1111's `Masked content` values."""
MASK_STRENGTH = 0.75
"""A1111's inpainting default."""
CANVAS_STRENGTH = 1.0
"""A grown canvas's new part holds only stretched edge pixels: it is painted from noise."""
DOING = {
    "mask": "this edit",
    "outpaint": "outpainting",
    "zoom_out": "zooming out",
    "pan": "panning",
    "square": "making it square",
}
_SIDES = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    edits = parser.add_argument_group("edits of the --init IMAGE (docs/editing.md)")
    edits.add_argument("--mask", type=Path, metavar="MASK", help="repaint the white part of MASK")
    edits.add_argument("--mask-blur", type=int, metavar="N", help="soften the mask's edge (4)")
    edits.add_argument(
        "--inpaint-area",
        choices=("whole", "masked"),
        help="repaint at the whole picture's size (default) or only the masked part, at 512x512",
    )
    edits.add_argument("--padding", type=int, metavar="N", help="--inpaint-area masked: 32")
    edits.add_argument("--fill", choices=tuple(FILLS), help="what the mask starts from (original)")
    edits.add_argument(
        "--outpaint", metavar="L,R,T,B", help="grow the canvas by pixels on each side"
    )
    edits.add_argument(
        "--zoom-out",
        type=float,
        metavar="F",
        help="shrink the picture into a canvas F times larger (1-2), kept at the picture's size",
    )
    edits.add_argument("--pan", choices=canvas.PAN_DIRECTIONS, help="extend one side by half")
    edits.add_argument(
        "--square", action="store_true", default=None, help="extend the short side to a square"
    )


def chosen_edit(args: argparse.Namespace) -> str | None:
    """The edit the flags ask for, or None; a UserError for flags that do not fit together."""
    chosen = [name for name in EDITS if getattr(args, name) is not None]
    if len(chosen) > 1:
        raise UserError(f"use only one of {', '.join(_flag(name) for name in chosen)}")
    tuning = [name for name in MASK_OPTIONS if getattr(args, name) is not None]
    if tuning and not chosen:
        raise UserError(f"{_flag(tuning[0])} tunes an edit: add --mask MASK (and --init IMAGE)")
    if not chosen:
        return None
    edit = chosen[0]
    if args.init is None:
        raise UserError(f"{_flag(edit)} edits a picture: add --init IMAGE")
    if args.size:
        raise UserError(f"{_flag(edit)} keeps the picture's own size: drop --size")
    if edit != "mask" and args.mask_blur is not None:
        raise UserError("--mask-blur is for --mask: an outpaint keeps the picture's pixels exactly")
    return edit


@dataclass(frozen=True)
class Edit:
    """The canvas an edit paints, with its mode and the notes to show."""

    canvas: canvas.Canvas
    mode: Mode
    notes: tuple[str, ...] = ()


def build_edit(args: argparse.Namespace, edit: str, picture: Image.Image, max_pixels: int) -> Edit:
    """The canvas and mask `edit` makes of `picture`, checked against the pixel limit."""
    if edit == "mask":
        mask, notes = canvas.prepare_mask(open_image(args.mask), picture.size)
        result = Edit(canvas.Canvas(picture, mask), Mode.INPAINT, notes)
    elif edit == "outpaint":
        result = Edit(canvas.outpaint(picture, *_sides(args.outpaint)), Mode.OUTPAINT)
    elif edit == "zoom_out":
        result = Edit(canvas.zoom_out(picture, args.zoom_out), Mode.OUTPAINT)
    elif edit == "pan":
        result = Edit(canvas.pan(picture, args.pan), Mode.OUTPAINT)
    else:
        result = Edit(canvas.make_square(picture), Mode.OUTPAINT)
    width, height = result.canvas.size
    canvas.check_canvas(width, height, max_pixels, DOING[edit])
    return result


def default_strength(edit: Edit) -> float:
    return MASK_STRENGTH if edit.mode is Mode.INPAINT else CANVAS_STRENGTH


def apply_edit(
    request: GenerationRequest,
    edit: Edit,
    args: argparse.Namespace,
    settings: Settings,
    scratch: Path,
) -> GenerationRequest:
    """The request turned into `edit`, its canvas and mask written into `scratch`, on the
    model's inpainting companion when it has one (and no --model chose the model)."""
    image_path, mask_path = scratch / "canvas.png", scratch / "mask.png"
    edit.canvas.image.save(image_path)
    edit.canvas.mask.save(mask_path)
    width, height = edit.canvas.size
    given = {
        "mask_blur": args.mask_blur,
        "area": args.inpaint_area,
        "padding": args.padding,
        "fill": FILLS[args.fill] if args.fill else None,
    }
    spec = InpaintSpec(**{key: value for key, value in given.items() if value is not None})
    model = request.model
    if args.model is None:
        companion = companion_of(settings, model, tuple(model_sources(settings)[0]))
        model = companion or model
    return replace(
        request,
        mode=edit.mode,
        width=width,
        height=height,
        init_image=str(image_path),
        mask_image=str(mask_path),
        inpaint=spec,
        model=model,
    )


def _sides(text: str) -> tuple[int, int, int, int]:
    match = _SIDES.match(text)
    if match is None:
        raise UserError(
            f"--outpaint {text!r} is not LEFT,RIGHT,TOP,BOTTOM in pixels: for example 64,0,0,0"
        )
    left, right, top, bottom = (int(side) for side in match.groups())
    return left, right, top, bottom


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
