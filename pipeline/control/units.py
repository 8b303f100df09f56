"""ControlNet units in the UNet calls: each unit's residuals, at the calls A1111 guides.

sd-webui-controlnet (`scripts/hook.py`, `guidance_schedule_handler`) guides a denoiser call
when `sampling_step / sampling_steps` lies within the unit's [start, end]. `sampling_steps` is
the steps the pass runs (an img2img or hires pass counts only its own, t_enc + 1), and
`sampling_step` is what the sampler's callback last set: 0 before the first step, then the
number of the step just finished, so step k (from 0) reads max(k - 1, 0). Both calls of a
two-call step (Heun, DPM2) read the same number. Its default "Balanced" mode guides the
prompt's rows and the negative's alike, each residual scaled by the unit's weight; in the hires
pass a canny unit uses "soft injection": residual i of its n (the mid block's last) is scaled
by 0.825^(n - 1 - i) besides the weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pipeline.control.loading import CONTROL_IN_CHANNELS
from pipeline.request import GenerationRequest

SOFT_INJECTION = 0.825
"""A1111's per-level damping of a ControlNet's residuals in the hires pass of a canny unit."""
SOFT_IN_HIRES = ("canny",)
"""Preprocessors whose units A1111 softens in the hires pass (it also names mlsd)."""


def guided_at(step: int, run: int, start: float, end: float) -> bool:
    """Whether a unit guides step `step` (from 0) of a pass of `run` steps, by A1111's rule."""
    percent = max(step - 1, 0) / run
    return start <= percent <= end


def read_map(image: str, width: int, height: int) -> torch.Tensor:
    """A stored control map as (3, height, width) RGB in 0..1, resized with Lanczos.

    This is what diffusers' ControlNet pipeline feeds as `controlnet_cond` (no -1..1 scaling).
    """
    import numpy as np
    from PIL import Image

    from pipeline.png import read_png

    picture, _ = read_png(Path(image))
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(picture, dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)


@dataclass(frozen=True)
class _Unit:
    """One unit over one pass: its model, every image's map, and its schedule and scales."""

    controlnet: Any
    maps: torch.Tensor
    """(images, 3, h, w): row i is the group's image i's map."""
    weight: float
    start: float
    end: float
    soft: bool

    def scales(self, count: int) -> list[float]:
        """The weight of each of `count` residuals, the mid block's last."""
        if not self.soft:
            return [self.weight] * count
        return [self.weight * SOFT_INJECTION ** (count - 1 - i) for i in range(count)]


class ControlAddition:
    """The ControlNet residuals of one group's UNet calls over one pass (a `UnetAddition`).

    Units of weight 0 are never run, so a request whose units all weigh 0 makes exactly the
    image it makes without them.
    """

    def __init__(self, units: Sequence[_Unit], run: int, calls_per_step: int) -> None:
        self._units = tuple(units)
        self._run = run
        self._calls_per_step = calls_per_step

    def cropped(self, areas: Sequence[tuple[slice, slice]]) -> ControlAddition:
        """The addition for a tiled pass's rows: for each pixel area in order, every image's
        map cropped to it, so each tile is guided by its own part of the map."""
        units = [
            replace(unit, maps=torch.cat([unit.maps[(..., *area)] for area in areas]))
            for unit in self._units
        ]
        return ControlAddition(units, self._run, self._calls_per_step)

    def unet_kwargs(
        self,
        sample: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        owners: torch.Tensor,
        call: int,
        negative: torch.Tensor,
    ) -> dict[str, Any]:
        step = call // self._calls_per_step
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for unit in self._units:
            if not guided_at(step, self._run, unit.start, unit.end):
                continue
            residuals, middle = unit.controlnet(
                sample[:, :CONTROL_IN_CHANNELS],
                timestep,
                encoder_hidden_states=context,
                controlnet_cond=unit.maps.index_select(0, owners),
                return_dict=False,
            )
            scales = unit.scales(len(residuals) + 1)
            scaled = [residual * scale for residual, scale in zip(residuals, scales, strict=False)]
            down = scaled if down is None else [a + b for a, b in zip(down, scaled, strict=True)]
            middle = middle * scales[-1]
            mid = middle if mid is None else mid + middle
        if down is None:
            return {}
        return {
            "down_block_additional_residuals": tuple(down),
            "mid_block_additional_residual": mid,
        }


def control_additions(
    controlnets: Mapping[str, Any],
    requests: Sequence[GenerationRequest],
    size: tuple[int, int],
    run: int,
    calls_per_step: int,
    hires: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[ControlAddition, ...]:
    """The addition for a group whose images are `requests` (one each), over one pass.

    The units' models and settings are the batch key's, so equal in every request; only the
    maps differ. Empty when no unit has weight.
    """
    width, height = size
    units = []
    for index, unit in enumerate(requests[0].controls):
        if unit.weight == 0:
            continue
        maps = [read_map(request.controls[index].image, width, height) for request in requests]
        units.append(
            _Unit(
                controlnets[unit.model],
                torch.stack(maps).to(device, dtype),
                unit.weight,
                unit.start,
                unit.end,
                soft=hires and unit.preprocessor in SOFT_IN_HIRES,
            )
        )
    return (ControlAddition(units, run, calls_per_step),) if units else ()
