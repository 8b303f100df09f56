"""Where the component configs that ship with Dreamcord live (package data, no network).

Its own module so that the model loader and the tiny model both read it without importing
each other.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def config_dir(name: str = "sd15") -> Path:
    """Component configs shipped with Dreamcord, for offline single-file loading.

    `sd15` is the text-to-image model; `sd15-inpainting` its 9-channel inpainting sibling
    (stable-diffusion-v1-5/stable-diffusion-inpainting), for the image edits to come.
    """
    return Path(str(resources.files("pipeline") / "configs" / name))
