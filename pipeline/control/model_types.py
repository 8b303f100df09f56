"""What a ControlNet model was trained to follow (its type), guessed from the names it ships with.

The ControlNet 1.1 files are named `control_v11<flags>_sd15<variant>_<type>` (lllyasviel's
naming: `control_v11p_sd15_canny`, `control_v11f1p_sd15_depth`,
`control_v11p_sd15s2_lineart_anime`), the 1.0 ones `control_sd15_<type>`, and community ones
reuse the type words (`..._qrcode_monster`, `..._brightness`). The type only chooses a default
preprocessor and what is shown; an admin can set it when the guess is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

from pipeline.errors import UserError


class ControlType(StrEnum):
    CANNY = "canny"
    DEPTH = "depth"
    OPENPOSE = "openpose"
    LINEART = "lineart"
    LINEART_ANIME = "lineart_anime"
    SOFTEDGE = "softedge"
    SCRIBBLE = "scribble"
    TILE = "tile"
    NORMAL = "normal"
    SEG = "seg"
    MLSD = "mlsd"
    SHUFFLE = "shuffle"
    IP2P = "ip2p"
    INPAINT = "inpaint"
    QRCODE = "qrcode"
    OTHER = "other"


CONTROL_TYPES = tuple(control_type.value for control_type in ControlType)

# Words of a file name per type, most specific first: "lineart_anime" before "lineart",
# "softedge"/"hed" before "edge"-like words. Each is matched as whole words of the name.
_TYPE_WORDS: tuple[tuple[ControlType, tuple[str, ...]], ...] = (
    (ControlType.LINEART_ANIME, ("lineart_anime", "anime_lineart", "lineartanime")),
    (ControlType.SOFTEDGE, ("softedge", "hed", "pidi", "pidinet")),
    (ControlType.LINEART, ("lineart",)),
    (ControlType.CANNY, ("canny",)),
    (ControlType.DEPTH, ("depth", "midas", "zoe", "leres")),
    (ControlType.OPENPOSE, ("openpose", "pose", "dwpose")),
    (ControlType.SCRIBBLE, ("scribble", "sketch")),
    (ControlType.TILE, ("tile",)),
    (ControlType.NORMAL, ("normalbae", "normal", "normalmap")),
    (ControlType.SEG, ("seg", "segmentation", "ade20k")),
    (ControlType.MLSD, ("mlsd",)),
    (ControlType.SHUFFLE, ("shuffle",)),
    (ControlType.IP2P, ("ip2p", "instruct_pix2pix", "pix2pix")),
    (ControlType.INPAINT, ("inpaint", "inpainting")),
    (ControlType.QRCODE, ("qrcode", "qr", "brightness", "illumination")),
)
METADATA_KEYS = ("modelspec.title", "ss_output_name")
"""Metadata that names a model, read when the file name says nothing."""


def guess_control_type(filename: str, metadata: Mapping[str, str] | None = None) -> ControlType:
    """The type a file's name says (else its name in the metadata); `other` when none does."""
    for text in (filename, *((metadata or {}).get(key, "") for key in METADATA_KEYS)):
        if found := _type_in(text):
            return found
    return ControlType.OTHER


def _type_in(text: str) -> ControlType | None:
    stem = re.sub(r"\.(safetensors|pth|ckpt|bin|pt)$", "", text.strip().lower())
    name = "_" + re.sub(r"[^a-z0-9]+", "_", stem) + "_"
    for control_type, words in _TYPE_WORDS:
        if any(f"_{word}_" in name for word in words):
            return control_type
    return None


def parse_control_type(text: str) -> ControlType:
    """The type an admin typed, or a UserError listing the types."""
    try:
        return ControlType(text.strip().lower())
    except ValueError:
        raise UserError(
            f"{text[:40]!r} is not a ControlNet type: use one of {', '.join(CONTROL_TYPES)}"
        ) from None


def default_preprocessor(control_type: str) -> str:
    """The built-in preprocessor a type's model reads: canny maps for a canny model; the
    others read a ready map (`none`) until their annotators are on disk."""
    return "canny" if control_type == ControlType.CANNY else "none"
