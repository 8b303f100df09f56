"""Fields of the infotext that A1111 reads to reproduce an image."""

from __future__ import annotations

from pipeline.infotext import ImageIdentity, build_parameters, parse_parameters
from pipeline.request import GenerationRequest


def test_the_infotext_says_cpu_noise_which_a1111_otherwise_takes_for_gpu() -> None:
    text = build_parameters(GenerationRequest("a fox"), ImageIdentity(seed=1))
    assert parse_parameters(text)[2]["RNG"] == "CPU"


def test_the_infotext_ends_with_the_version_as_a1111_does() -> None:
    import importlib.metadata

    text = build_parameters(GenerationRequest("a fox"), ImageIdentity(seed=1))
    assert text.endswith(f"Version: dreamcord {importlib.metadata.version('dreamcord')}")
