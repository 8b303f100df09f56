"""A1111 1.10's sampler and schedule-type names: the two fields, old combined names, defaults."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.errors import UserError
from pipeline.infotext import ImageIdentity, build_parameters
from pipeline.limits import Limits, check_request
from pipeline.recipe import read_recipe
from pipeline.request import GenerationRequest
from pipeline.samplers import SAMPLER_NAMES, resolve_sampler

REQUEST = GenerationRequest("a fox", seed=7)


@pytest.mark.parametrize(
    ("name", "sampler", "schedule"),
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
        ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "Karras"),
        ("DPM++ SDE Karras", "DPM++ SDE", "Karras"),
        ("dpm2 a karras", "DPM2 a", "Karras"),
        ("LMS Karras", "LMS", "Karras"),
        ("Euler a", "Euler a", "Automatic"),
        ("Euler  Exponential", "Euler", "Exponential"),
    ],
)
def test_old_combined_names_split_into_sampler_and_schedule(
    name: str, sampler: str, schedule: str
) -> None:
    found, chosen = resolve_sampler(name)
    assert (found.name, chosen) == (sampler, schedule)


def test_a_chosen_schedule_wins_over_the_one_in_a_combined_name() -> None:
    assert resolve_sampler("DPM++ 2M Karras", "exponential")[1] == "Exponential"


@pytest.mark.parametrize(
    ("sampler", "schedule", "written"),
    [
        ("DPM++ 2M", "Automatic", "Sampler: DPM++ 2M, Schedule type: Karras,"),
        ("DPM++ 2M Karras", "Automatic", "Sampler: DPM++ 2M, Schedule type: Karras,"),
        ("DPM++ 2M SDE", "Automatic", "Sampler: DPM++ 2M SDE, Schedule type: Exponential,"),
        ("DPM2 a", "Automatic", "Sampler: DPM2 a, Schedule type: Karras,"),
        ("Euler a", "Automatic", "Sampler: Euler a, Schedule type: Automatic,"),
        ("Euler", "Uniform", "Sampler: Euler, Schedule type: Uniform,"),
        ("DDIM", "Automatic", "Sampler: DDIM, Schedule type: Automatic,"),
    ],
)
def test_infotext_writes_the_schedule_type_as_a1111_does(
    sampler: str, schedule: str, written: str
) -> None:
    request = replace(REQUEST, sampler=sampler, schedule=schedule)
    assert written in build_parameters(request, ImageIdentity(seed=7))


def test_the_schedule_type_is_read_back_from_infotext() -> None:
    fields = "Steps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 64x64"
    text = f"a fox\n{fields}"
    options = read_recipe(text, Limits()).options
    assert (options["sampler"], options["schedule"]) == ("Euler", "Karras")


def test_check_request_stores_the_two_fields() -> None:
    checked = check_request(replace(REQUEST, sampler="dpm++ 2m sde karras"), Limits())
    assert (checked.sampler, checked.schedule) == ("DPM++ 2M SDE", "Karras")


@pytest.mark.parametrize(
    ("sampler", "schedule", "says"),
    [
        ("PLMS", "Karras", "PLMS keeps its own timesteps"),
        ("UniPC Karras", "Automatic", "unknown sampler 'UniPC Karras'"),
        ("Euler", "Fast", "unknown schedule type 'Fast': use one of Automatic, Uniform"),
    ],
)
def test_impossible_combinations_are_refused(sampler: str, schedule: str, says: str) -> None:
    with pytest.raises(UserError, match=says):
        resolve_sampler(sampler, schedule)


def test_the_a1111_samplers_the_slice_asks_for_are_offered() -> None:
    wanted = {"Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE"}
    assert wanted | {"DPM++ 2M SDE", "DDIM", "UniPC"} <= set(SAMPLER_NAMES)
