"""`dreamcord generate`'s image prompt options: `--image-prompt IMAGE [--image-weight W]` and
`--style-ref IMAGE`, each repeatable; a weight belongs to the image prompt before it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.requests import Built, with_image_prompts
from pipeline.errors import UserError
from pipeline.png import read_png
from pipeline.request import GenerationRequest

NO_SREF_HERE = (
    "--sref names an image of the Discord bot's gallery: here, give the picture itself with "
    "--style-ref IMAGE"
)


class _Weight(argparse.Action):
    """Sets the weight of the last --image-prompt; refuses one without a picture before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        prompts: list[list[Any]] = getattr(namespace, "image_prompts", None) or []
        if not prompts or prompts[-1][1] is not None:
            parser.error("--image-weight W follows the --image-prompt IMAGE it weights")
        prompts[-1][1] = values


class _Picture(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        prompts = getattr(namespace, "image_prompts", None) or []
        namespace.image_prompts = [*prompts, [values, None]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("image prompts (IP-Adapter: IP_ADAPTER, IMAGE_ENCODER)")
    group.add_argument(
        "--image-prompt",
        dest="image_prompts",
        metavar="IMAGE",
        type=Path,
        action=_Picture,
        default=[],
        help="a picture to draw from (repeatable, up to 5 with --style-ref)",
    )
    group.add_argument(
        "--image-weight",
        dest="image_prompts",
        metavar="W",
        type=float,
        action=_Weight,
        help="the weight of the --image-prompt before it, 0 to 2 (default: the prompt's --iw, 1)",
    )
    group.add_argument(
        "--style-ref",
        dest="style_refs",
        metavar="IMAGE",
        type=Path,
        action="append",
        default=[],
        help="a picture whose style to borrow (repeatable; like Midjourney's --sref)",
    )


def with_cli_image_prompts(built: Built, args: argparse.Namespace) -> GenerationRequest:
    """The request with the command line's pictures, each checked to be a readable image."""
    if built.sref is not None:
        raise UserError(NO_SREF_HERE)
    pictures: list[tuple[Path, float | None]] = [(p, w) for p, w in args.image_prompts]
    styles: list[Path] = args.style_refs
    for path in [path for path, _ in pictures] + styles:
        read_png(path)  # a UserError names a missing or unreadable file
    return with_image_prompts(
        built,
        [(str(path.resolve()), weight) for path, weight in pictures],
        [str(path.resolve()) for path in styles],
    )
