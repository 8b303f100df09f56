"""`dreamcord generate`'s ControlNet units: `--control NAME --control-image IMAGE ...`, up to 3.

Each `--control` starts a unit and the `--control-*` and `--preprocess` options after it apply
to that unit; options before the first `--control` start a unit whose model is the library's
only enabled one (or the `--control` that follows names it). The units follow the bot's rules
(`bot.controls`: the model, the default preprocessor, the checks); their maps are made at the
request's size into the command's scratch folder, so no file is left behind, and
`--control-map-out FILE` keeps a copy of each (FILE, then FILE-2.png, FILE-3.png).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.controls import ControlAsk, ControlModel, make_map, plan_units
from bot.uploads import check_picture_size
from pipeline.control.annotators import Annotators
from pipeline.errors import UserError
from pipeline.request import CONTROL_PREPROCESSORS, MAX_CONTROL_UNITS, GenerationRequest

FIELDS = {
    "--control": "model",
    "--control-image": "picture",
    "--control-weight": "weight",
    "--control-start": "start",
    "--control-end": "end",
    "--preprocess": "preprocessor",
}
"""Each unit option and the `ControlAsk` field it sets."""


class UnitOption(argparse.Action):
    """Sets a field of the unit being written (see the module docstring), in `args.controls`."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        field = FIELDS[option_string or ""]
        units: list[dict[str, Any]] = list(getattr(namespace, self.dest) or [])
        if not units or (field == "model" and "model" in units[-1]):
            units.append({})
        if field in units[-1]:
            parser.error(
                f"{option_string} is given twice for ControlNet unit {len(units)}: start the next "
                "unit with --control NAME"
            )
        units[-1][field] = values
        setattr(namespace, self.dest, units)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        f"ControlNet (docs/controlnet.md), up to {MAX_CONTROL_UNITS} units",
        "each --control starts a unit; the --control-* and --preprocess options after it apply "
        "to it",
    )
    unit: dict[str, Any] = {"dest": "controls", "action": UnitOption}
    group.add_argument(
        "--control", metavar="NAME", help="a ControlNet model of the library", **unit
    )
    group.add_argument(
        "--control-image",
        type=Path,
        metavar="IMAGE",
        help="the picture the unit follows, or a ready map (depth map, pose skeleton...)",
        **unit,
    )
    group.add_argument("--control-weight", type=float, metavar="W", help="0-2 (1)", **unit)
    group.add_argument(
        "--control-start", type=float, metavar="S", help="first guided step, 0-1 (0)", **unit
    )
    group.add_argument(
        "--control-end", type=float, metavar="E", help="last guided step, 0-1 (1)", **unit
    )
    group.add_argument(
        "--preprocess",
        choices=CONTROL_PREPROCESSORS,
        help="how the picture becomes the map (default: canny for a canny model, else none: "
        "the picture is the map); depth needs a transformers depth model (DPT/MiDaS, Depth "
        "Anything) in DATA_DIR/annotators/depth, else send a ready depth map with none",
        **unit,
    )
    group.add_argument(
        "--control-map-out",
        type=Path,
        metavar="FILE",
        help="also save the map of unit 1 as FILE (unit 2 as FILE-2.png, unit 3 FILE-3.png)",
    )


def asks_of(args: argparse.Namespace) -> list[ControlAsk]:
    """The units the flags ask for, their pictures read (size checked first)."""
    if args.control_map_out is not None and not args.controls:
        raise UserError("--control-map-out saves a ControlNet map: add --control-image IMAGE")
    asks = []
    for unit in args.controls or ():
        picture = unit.get("picture")
        asks.append(ControlAsk(**{**unit, "picture": None if picture is None else read(picture)}))
    return asks


def with_controls(
    request: GenerationRequest,
    asks: Sequence[ControlAsk],
    models: Sequence[ControlModel],
    scratch: Path,
    annotators: Annotators,
) -> GenerationRequest:
    """`request` with the units `asks` make, their maps written into `scratch` at its size."""
    if not asks:
        return request
    units = []
    for number, plan in enumerate(plan_units(request, asks, models, annotators), start=1):
        path = scratch / f"control-{number}.png"
        make_map(plan, request.width, request.height, annotators).save(path)
        units.append(replace(plan.unit, image=str(path)))
    return replace(request, controls=tuple(units))


def map_out_paths(first: Path, count: int) -> list[Path]:
    """Where `--control-map-out first` saves each of `count` maps."""
    suffix = first.suffix or ".png"
    later = [first.with_name(f"{first.stem}-{number}{suffix}") for number in range(2, count + 1)]
    return [first, *later][:count]


def read(path: Path) -> bytes:
    """A control image's bytes, refused by its size before it is read."""
    try:
        check_picture_size(path.stat().st_size)
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"--control-image {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise UserError(f"--control-image {path} is a folder: give a picture file") from None
    except OSError as error:
        raise UserError(f"cannot read --control-image {path}: {error.strerror}") from None
