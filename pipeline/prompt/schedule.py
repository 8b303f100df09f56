"""What each pass of a request conditions on: its prompt's AND parts and their edit schedules.

This is A1111 1.10's plan (processing.py, prompt_parser.py). Extra-network tags are cut from the
prompts first. The prompt splits into AND parts with their weights; each part, and the negative,
gets a schedule over the pass's steps. The negative is always one part: A1111 reads an AND in it
as the word. The first pass (txt2img, or img2img, which counts all its steps though it runs only
the last ones) spans the request's steps; the hires pass spans its own steps, counted on from
the first pass's (`Timeline`). A1111's second-order samplers count two calls a step.

Every distinct text of a pass is one text-encoder input and every AND part one more UNet
prediction each step, so both are bounded here, for every request, before anything runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.errors import UserError
from pipeline.prompt.composable import split_parts
from pipeline.prompt.editing import Schedule, Timeline, prompt_schedule
from pipeline.prompt.tags import remove_tags
from pipeline.request import GenerationRequest
from pipeline.samplers import find_sampler

MAX_PROMPT_PARTS = 8
"""AND parts of one prompt: each is one more UNet prediction per step and image."""
MAX_PART_WEIGHT = 10.0
"""|weight| of an AND part: it multiplies the CFG scale; A1111 has no bound."""
MAX_SCHEDULE_TEXTS = 32
"""Different texts one prompt (all its parts) or negative may give over one pass."""


@dataclass(frozen=True)
class ScheduledPart:
    """One AND part: its weight and its texts over the pass."""

    weight: float
    schedule: Schedule


@dataclass(frozen=True)
class PromptPlan:
    """A prompt or a negative over one pass: its parts (a negative has one, of weight 1)."""

    parts: tuple[ScheduledPart, ...]

    def texts(self) -> tuple[str, ...]:
        """The different texts the parts give, in order: each is one text-encoder input."""
        return tuple(dict.fromkeys(text for part in self.parts for _, text in part.schedule))


@dataclass(frozen=True)
class PassPlan:
    """What one denoising pass conditions on."""

    prompt: PromptPlan
    negative: PromptPlan


def plan_conditioning(request: GenerationRequest) -> tuple[PassPlan, ...]:
    """Per pass of the request, its prompt's and negative's plans; a UserError past the limits."""
    problems = part_problems(request.prompt)
    if problems:
        raise UserError("; ".join(problems))
    parts = split_parts(remove_tags(request.prompt)[0])
    negative = remove_tags(request.negative)[0]
    plans = []
    for index, timeline in enumerate(request_timelines(request)):
        plan = PassPlan(
            PromptPlan(tuple(ScheduledPart(w, prompt_schedule(t, timeline)) for t, w in parts)),
            PromptPlan((ScheduledPart(1.0, prompt_schedule(negative, timeline)),)),
        )
        for label, prompt in (("prompt", plan.prompt), ("negative prompt", plan.negative)):
            if len(prompt.texts()) > MAX_SCHEDULE_TEXTS:
                raise UserError(
                    f"the {label} gives {len(prompt.texts())} different texts over "
                    f"{'the hires pass' if index else 'its steps'} through prompt editing and "
                    f"alternation; the limit is {MAX_SCHEDULE_TEXTS}: use fewer [a|b] options "
                    "or [from:to:when] edits"
                )
        plans.append(plan)
    return tuple(plans)


def part_problems(prompt: str) -> list[str]:
    """What is wrong with a prompt's AND parts, whatever the steps; empty when nothing is."""
    parts = split_parts(remove_tags(prompt)[0])
    problems = []
    if len(parts) > MAX_PROMPT_PARTS:
        problems.append(
            f"the prompt has {len(parts)} AND parts, the limit is {MAX_PROMPT_PARTS}: "
            "join some of them"
        )
    for text, weight in parts:
        if not (math.isfinite(weight) and abs(weight) <= MAX_PART_WEIGHT):
            problems.append(
                f"{text.strip()[:30]!r} ends in the weight :{weight:g}, the limit is "
                f"{MAX_PART_WEIGHT:g} (A1111 reads ':number' at the end of a prompt or of an AND "
                "part as that part's weight): write a smaller number"
            )
    return problems


def request_timelines(request: GenerationRequest) -> tuple[Timeline, ...]:
    """The timeline of each pass: the request's steps, then the hires pass's."""
    calls = 2 if find_sampler(request.sampler).second_order else 1
    first = Timeline(request.steps * calls)
    if request.hires is None:
        return (first,)
    return first, Timeline((request.hires.steps or request.steps) * calls, first.steps)


def lint_texts(text: str, steps: int, *, composable: bool) -> frozenset[str]:
    """Every text `text` gives over a first and a hires pass of `steps` steps, to check them.

    `composable`: split at AND first, as the prompt is (the negative is not).
    """
    parts = [part for part, _ in split_parts(text)] if composable else [text]
    timelines = (Timeline(steps), Timeline(steps, steps))
    return frozenset(
        piece
        for part in parts
        for timeline in timelines
        for _, piece in prompt_schedule(part, timeline)
    )
