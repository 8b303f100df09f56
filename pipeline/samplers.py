"""A1111 1.10 samplers and schedule types, and the diffusers scheduler behind each (no torch here).

Since A1111 1.9 a sampler and its noise schedule are two fields (`Sampler: DPM++ 2M, Schedule
type: Karras`); the older combined names (`DPM++ 2M Karras`) still parse into the two. The
k-diffusion samplers step through an explicit sigma schedule (pipeline/schedules.py builds it);
DDIM, PLMS and UniPC are A1111's timestep samplers, which have no schedule type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UserError

AUTOMATIC = "Automatic"
UNIFORM = "Uniform"
KARRAS = "Karras"
EXPONENTIAL = "Exponential"
SGM_UNIFORM = "SGM Uniform"
SCHEDULE_NAMES: tuple[str, ...] = (AUTOMATIC, UNIFORM, KARRAS, EXPONENTIAL, SGM_UNIFORM)


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class plus what makes it behave as the A1111 sampler `name`.

    `default_schedule` is what Automatic means for it in A1111 (None: the model's own uniform
    discrete schedule). `discard_penultimate` is A1111's option of the same name: the schedule
    is made one step longer and its next-to-last sigma dropped. `timestep_sampler` marks the
    samplers that keep diffusers' own timesteps and take no schedule type. An `ancestral`
    sampler draws its step noise from the image's generator, which A1111's ENSD reseeds (its
    `uses_ensd`); for `brownian_step_noise` A1111 draws it from a Brownian tree per image
    instead (its `brownian_noise`), which the engine builds and hands to the scheduler.
    `distilled_steps` is for samplers of distilled models (LCM): their sigma schedule is made
    over only that many of the model's timesteps.
    `second_order` is A1111's option of the same name: its prompt schedules count two denoiser
    calls a step.
    """

    name: str
    scheduler: str
    options: dict[str, Any] = field(default_factory=dict)
    default_schedule: str | None = None
    discard_penultimate: bool = False
    timestep_sampler: bool = False
    ancestral: bool = False
    brownian_step_noise: bool = False
    distilled_steps: int | None = None
    second_order: bool = False


_SDE = {"algorithm_type": "sde-dpmsolver++"}
LCM_DISTILLED_STEPS = 50
"""LCM models are distilled on 50 of SD1.5's 1000 timesteps (A1111's "LCM original steps")."""

SAMPLERS: dict[str, Sampler] = {
    s.name.lower(): s
    for s in (
        Sampler("Euler a", "EulerAncestralDiscreteScheduler", ancestral=True),
        Sampler("Euler", "EulerDiscreteScheduler"),
        Sampler("LMS", "LMSDiscreteScheduler"),
        Sampler("Heun", "HeunDiscreteScheduler", second_order=True),
        Sampler(
            "DPM2",
            "KDPM2DiscreteScheduler",
            {},
            KARRAS,
            discard_penultimate=True,
            second_order=True,
        ),
        Sampler(
            "DPM2 a",
            "KDPM2AncestralDiscreteScheduler",
            {},
            KARRAS,
            discard_penultimate=True,
            ancestral=True,
            second_order=True,
        ),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {}, KARRAS),
        Sampler(
            "DPM++ SDE",
            "DPMSolverSDEScheduler",
            {},
            KARRAS,
            brownian_step_noise=True,
            second_order=True,
        ),
        Sampler(
            "DPM++ 2M SDE",
            "DPMSolverMultistepScheduler",
            _SDE,
            EXPONENTIAL,
            brownian_step_noise=True,
        ),
        Sampler(
            "DPM++ 2S a", "DpmPlusPlus2SAncestral", {}, KARRAS, ancestral=True, second_order=True
        ),
        Sampler(
            "DPM++ 3M SDE",
            "DpmPlusPlus3MSde",
            {},
            EXPONENTIAL,
            discard_penultimate=True,
            brownian_step_noise=True,
        ),
        # A1111 leaves LCM out of its ENSD samplers, but LCM draws step noise that ENSD
        # reseeds, so its ENSD is written to reproduce the image.
        Sampler("LCM", "LatentConsistency", ancestral=True, distilled_steps=LCM_DISTILLED_STEPS),
        Sampler("DDIM", "DDIMScheduler", timestep_sampler=True),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, timestep_sampler=True),
        Sampler("UniPC", "UniPCMultistepScheduler", timestep_sampler=True),
    )
}

SAMPLER_NAMES: tuple[str, ...] = tuple(s.name for s in SAMPLERS.values())


def find_sampler(name: str) -> Sampler:
    """The sampler called `name` (case-insensitive, old combined names too), or a UserError."""
    return split_sampler_name(name)[0]


def split_sampler_name(name: str) -> tuple[Sampler, str | None]:
    """(sampler, schedule type) of a sampler name; the schedule is None unless the name has one.

    `DPM++ 2M Karras` is A1111's name from before 1.9 for DPM++ 2M with the Karras schedule.
    """
    key = " ".join(name.split()).lower()
    if key in SAMPLERS:
        return SAMPLERS[key], None
    for schedule in SCHEDULE_NAMES[1:]:
        base = key.removesuffix(f" {schedule.lower()}")
        if base != key and base in SAMPLERS and not SAMPLERS[base].timestep_sampler:
            return SAMPLERS[base], schedule
    raise UserError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLER_NAMES)}")


def find_schedule(name: str) -> str:
    """The schedule type called `name` (case-insensitive), or a UserError listing them."""
    for schedule in SCHEDULE_NAMES:
        if " ".join(name.split()).lower() == schedule.lower():
            return schedule
    raise UserError(f"unknown schedule type {name!r}: use one of {', '.join(SCHEDULE_NAMES)}")


def resolve_sampler(name: str, schedule: str = AUTOMATIC) -> tuple[Sampler, str]:
    """The sampler and schedule type a request names, or a UserError saying what to fix.

    A schedule inside an old combined name counts unless another schedule type is chosen.
    """
    sampler, named = split_sampler_name(name)
    schedule = find_schedule(schedule)
    if schedule == AUTOMATIC and named is not None:
        schedule = named
    if sampler.timestep_sampler and schedule != AUTOMATIC:
        raise UserError(
            f"{sampler.name} keeps its own timesteps: use schedule type Automatic with it, "
            "or a k-diffusion sampler such as Euler or DPM++ 2M"
        )
    return sampler, schedule


def effective_schedule(sampler: Sampler, schedule: str) -> str | None:
    """The schedule that really runs: Automatic is the sampler's A1111 default.

    None for the timestep samplers, which have no sigma schedule of their own.
    """
    if sampler.timestep_sampler:
        return None
    if schedule == AUTOMATIC:
        return sampler.default_schedule or UNIFORM
    return schedule


def schedule_label(sampler: Sampler, schedule: str) -> str:
    """What A1111 writes as `Schedule type`: the chosen one, Automatic resolved to a default."""
    if schedule == AUTOMATIC and sampler.default_schedule is not None:
        return sampler.default_schedule
    return schedule
