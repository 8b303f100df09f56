"""A1111 sampler names and the diffusers scheduler each one maps to (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class name plus the config overrides that make it an A1111 sampler."""

    name: str
    scheduler: str
    options: dict[str, Any] = field(default_factory=dict)


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

SAMPLERS: dict[str, Sampler] = {
    s.name.lower(): s
    for s in (
        Sampler("Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("Euler", "EulerDiscreteScheduler"),
        Sampler("LMS", "LMSDiscreteScheduler"),
        Sampler("Heun", "HeunDiscreteScheduler"),
        Sampler("DPM2", "KDPM2DiscreteScheduler"),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler"),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler"),
        Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", _KARRAS),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", _SDE),
        Sampler("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}),
        Sampler("DPM++ SDE Karras", "DPMSolverSDEScheduler", _KARRAS),
        Sampler("DDIM", "DDIMScheduler"),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        Sampler("UniPC", "UniPCMultistepScheduler"),
    )
}

SAMPLER_NAMES: tuple[str, ...] = tuple(s.name for s in SAMPLERS.values())


def find_sampler(name: str) -> Sampler:
    """The sampler called `name` (case-insensitive), or a UserError listing the valid names."""
    sampler = SAMPLERS.get(name.strip().lower())
    if sampler is None:
        raise UserError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLER_NAMES)}")
    return sampler
