"""Each pass's conditioning plan follows A1111 1.10's processing.py, within Dreamcord's limits.

A1111's rules used here: the prompt schedules of txt2img and img2img span the request's steps
(`setup_conds`), twice that for samplers marked `second_order` (Heun, DPM2, DPM2 a, DPM++ SDE,
DPM++ 2S a); the hires pass's span its own steps (Hires steps, else the steps), doubled the same
way, with the first pass's count as the offset (`calculate_hr_conds`). The negative goes through
`get_learned_conditioning`, which has no AND.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.errors import UserError
from pipeline.limits import Limits, check_request
from pipeline.prompt.editing import Timeline
from pipeline.prompt.schedule import (
    MAX_PROMPT_PARTS,
    MAX_SCHEDULE_TEXTS,
    part_problems,
    plan_conditioning,
    request_timelines,
)
from pipeline.request import GenerationRequest, HiresSpec, Mode

REQUEST = GenerationRequest("a cat", steps=20, sampler="Euler")


@pytest.mark.parametrize(
    ("sampler", "hires_steps", "expected"),
    [
        ("Euler", None, (Timeline(20),)),
        ("DPM++ 2M", None, (Timeline(20),)),
        ("Heun", None, (Timeline(40),)),
        ("DPM2", None, (Timeline(40),)),
        ("DPM2 a", None, (Timeline(40),)),
        ("DPM++ SDE", None, (Timeline(40),)),
        ("DPM++ 2S a", None, (Timeline(40),)),
        ("DPM++ 3M SDE", None, (Timeline(20),)),
        ("LCM", None, (Timeline(20),)),
        ("Euler", 8, (Timeline(20), Timeline(8, 20))),
        ("Euler", 0, (Timeline(20), Timeline(20, 20))),
        ("Heun", 8, (Timeline(40), Timeline(16, 40))),
    ],
)
def test_timelines_are_a1111s(sampler: str, hires_steps: int | None, expected) -> None:
    hires = None if hires_steps is None else HiresSpec(steps=hires_steps)
    assert request_timelines(replace(REQUEST, sampler=sampler, hires=hires)) == expected


def test_img2img_counts_all_its_steps_though_it_runs_the_last_ones() -> None:
    request = replace(REQUEST, prompt="[a:b:0.5]", mode=Mode.IMG2IMG, strength=0.3)
    (plan,) = plan_conditioning(replace(request, init_image="x.png"))
    assert plan.prompt.parts[0].schedule == ((10, "a"), (20, "b"))


def test_prompt_parts_carry_their_weights_and_the_negative_stays_one_text() -> None:
    request = replace(REQUEST, prompt="a cat AND [a dog:a fox:5]:0.5", negative="x AND y:2")
    (plan,) = plan_conditioning(request)
    assert [(part.weight, part.schedule) for part in plan.prompt.parts] == [
        (1.0, ((20, "a cat"),)),
        (0.5, ((5, " a dog"), (20, " a fox"))),
    ]
    assert [(part.weight, part.schedule) for part in plan.negative.parts] == [
        (1.0, ((20, "x AND y:2"),))
    ]


def test_extra_network_tags_are_cut_before_the_editing_is_read() -> None:
    # With the tag in place the edit would have four colons and be text.
    (plan,) = plan_conditioning(replace(REQUEST, prompt="[<lora:x:1>:red:10] cat"))
    assert plan.prompt.parts[0].schedule == ((10, " cat"), (20, "red cat"))


def test_the_hires_pass_has_its_own_schedule() -> None:
    request = replace(REQUEST, prompt="[a:b:1.5]", hires=HiresSpec(steps=10))
    first, hires = plan_conditioning(request)
    assert first.prompt.parts[0].schedule == ((20, "a"),)
    assert hires.prompt.parts[0].schedule == ((5, "a"), (10, "b"))


def options(count: int) -> str:
    return "[" + "|".join(f"w{index}" for index in range(count)) + "]"


def test_a_schedule_of_too_many_texts_is_refused_with_what_to_change() -> None:
    request = replace(REQUEST, prompt=options(MAX_SCHEDULE_TEXTS + 1), steps=40)
    with pytest.raises(UserError, match=r"gives 33 different texts over its steps.*limit is 32"):
        check_request(request, Limits())
    check_request(replace(request, prompt=options(MAX_SCHEDULE_TEXTS)), Limits())


def test_the_limit_counts_the_hires_pass_on_its_own() -> None:
    # 20 first-pass steps show 20 of the 40 options; 40 hires steps show all of them.
    request = replace(REQUEST, prompt=options(40), hires=HiresSpec(steps=40))
    with pytest.raises(UserError, match="over the hires pass"):
        plan_conditioning(request)
    plan_conditioning(replace(request, hires=None))


def test_the_negative_has_the_limit_too() -> None:
    request = replace(REQUEST, negative=options(MAX_SCHEDULE_TEXTS + 1), steps=40)
    with pytest.raises(UserError, match="the negative prompt gives 33"):
        plan_conditioning(request)


def test_too_many_and_parts_or_a_huge_part_weight_is_refused() -> None:
    many = " AND ".join(["a"] * (MAX_PROMPT_PARTS + 1))
    assert "9 AND parts, the limit is 8" in part_problems(many)[0]
    assert part_problems(" AND ".join(["a"] * MAX_PROMPT_PARTS)) == []
    assert "ends in the weight :99" in part_problems("a cat:99")[0]
    assert "weight :inf" in part_problems("a AND b:" + "9" * 400)[0]
    with pytest.raises(UserError, match="AND parts"):
        check_request(replace(REQUEST, prompt=many), Limits())
