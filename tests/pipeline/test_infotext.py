"""Fields of the infotext that A1111 reads to reproduce an image."""

from __future__ import annotations

import pytest

from pipeline.infotext import (
    ImageIdentity,
    build_parameters,
    options_from_parameters,
    parse_parameters,
)
from pipeline.limits import find_rng
from pipeline.request import GenerationRequest


@pytest.mark.parametrize(("rng", "written"), [("CPU", "CPU"), ("nv", "NV"), ("GPU", None)])
def test_rng_is_written_unless_gpu_which_a1111_reads_a_missing_field_as(
    rng: str, written: str | None
) -> None:
    # A1111 1.10 processing.py: "RNG": opts.randn_source if opts.randn_source != "GPU" else None;
    # infotext_utils.py: a missing RNG means GPU.
    request = GenerationRequest("a fox", rng=rng)
    text = build_parameters(request, ImageIdentity(seed=1))
    assert parse_parameters(text)[2].get("RNG") == written
    assert options_from_parameters(text)[2]["rng"] == find_rng(rng)


@pytest.mark.parametrize(
    ("sampler", "ensd", "written"),
    [("Euler a", 31337, "31337"), ("DPM2 a", 5, "5"), ("Euler a", 0, None), ("DPM++ SDE", 9, None)],
)
def test_ensd_is_written_only_where_it_changes_the_image(
    sampler: str, ensd: int, written: str | None
) -> None:
    # A1111 1.10 writes ENSD for a non-zero delta and a sampler with uses_ensd (the ancestral
    # ones); others never draw from the reseeded generators.
    request = GenerationRequest("a fox", sampler=sampler, ensd=ensd)
    fields = parse_parameters(build_parameters(request, ImageIdentity(seed=1)))[2]
    assert fields.get("ENSD") == written


def test_an_a1111_infotext_without_rng_reads_as_gpu_noise() -> None:
    text = "a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ENSD: 31337"
    options = options_from_parameters(text)[2]
    assert (options["rng"], options["ensd"]) == ("GPU", 31337)


def test_the_infotext_ends_with_the_version_as_a1111_does() -> None:
    import importlib.metadata

    text = build_parameters(GenerationRequest("a fox"), ImageIdentity(seed=1))
    assert text.endswith(f"Version: dreamcord {importlib.metadata.version('dreamcord')}")
