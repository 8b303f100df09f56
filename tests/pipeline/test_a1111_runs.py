"""Whole runs: both images of a batch equal A1111's, in txt2img, img2img and the hires pass.

The expectation is k-diffusion run with A1111 1.10's conventions on the same tiny UNet and the
same noise (tests/pipeline/a1111_reference.py), never the engine's own output. Image 2 of a
batch has seed + 1, so each run also shows that no image depends on the batch it shares.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine import Engine
from pipeline.request import GenerationRequest, HiresSpec, Mode
from tests.pipeline.a1111_reference import A1111Run, a1111_latents, reference_sigmas
from tests.pipeline.engine_helpers import run

BATCH = GenerationRequest("a red fox in the snow", width=64, height=64, steps=6, seed=42, count=2)
HIRES = HiresSpec(scale=1.5, steps=3, denoise=0.6, upscaler="Latent")
"""3 hires steps of a 5-step schedule, at 96x96."""

RUNS = [
    ("Euler", "Automatic"),
    ("Euler a", "Automatic"),
    ("Heun", "Automatic"),
    ("LMS", "Automatic"),
    ("DPM2", "Automatic"),
    ("DPM2 a", "Automatic"),
    ("DPM++ 2M", "Automatic"),
    ("DPM++ 2M", "Uniform"),
    ("DPM++ SDE", "Automatic"),
    ("DPM++ 2M SDE", "Automatic"),
    ("DPM++ 2M SDE", "Karras"),
    ("DPM++ 2S a", "Automatic"),
    ("DPM++ 3M SDE", "Automatic"),
    ("LCM", "Automatic"),
    ("Euler", "Exponential"),
    ("Euler", "SGM Uniform"),
]
"""Every k-diffusion sampler at its Automatic schedule, and each other schedule type once."""


def close_to_a1111(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # The latents are 40-70 in size here; a schedule one step off moves them by about 1.
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-3)


@pytest.fixture(scope="module")
def init_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smooth 64x64 picture to start img2img from."""
    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("init") / "init.png"
    Image.fromarray(pixels, "RGB").save(path)
    return path


def in_mode(request: GenerationRequest, mode: str, init_png: Path) -> GenerationRequest:
    if mode == "img2img":
        return replace(request, mode=Mode.IMG2IMG, init_image=str(init_png), strength=0.5)
    if mode == "hires":
        return replace(request, hires=HIRES)
    return request


def engine_latents(engine: Engine, decoded: list, request: GenerationRequest) -> torch.Tensor:
    """The final latents of every image of one batch, as the engine hands them to the VAE."""
    run(engine, request)
    return torch.cat(decoded[-request.count :])


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "hires"])
@pytest.mark.parametrize(("sampler", "schedule"), RUNS)
def test_both_images_of_a_batch_equal_a1111s(
    sd15_engine: Engine,
    decoded_latents: list,
    init_png: Path,
    sampler: str,
    schedule: str,
    mode: str,
) -> None:
    request = in_mode(replace(BATCH, sampler=sampler, schedule=schedule), mode, init_png)
    actual = engine_latents(sd15_engine, decoded_latents, request)
    close_to_a1111(actual, a1111_latents(sd15_engine, request))


@pytest.mark.parametrize(
    ("rng", "ensd", "sampler"),
    [
        ("NV", 0, "Euler a"),
        ("NV", 31337, "Euler a"),
        ("GPU", 31337, "DPM2 a"),
        ("CPU", 31337, "Euler a"),
        ("NV", 0, "DPM++ SDE"),
        ("GPU", 31337, "DPM++ 2M SDE"),
    ],
)
def test_nv_gpu_and_ensd_runs_equal_a1111s_with_that_noise(
    sd15_engine: Engine, decoded_latents: list, rng: str, ensd: int, sampler: str
) -> None:
    # Through the hires pass, so the second pass's new generators are checked too.
    request = replace(BATCH, sampler=sampler, rng=rng, ensd=ensd, steps=4, hires=HIRES)
    actual = engine_latents(sd15_engine, decoded_latents, request)
    close_to_a1111(actual, a1111_latents(sd15_engine, request))


def test_variation_seeds_blend_a1111s_nv_noise_in_both_passes(
    sd15_engine: Engine, decoded_latents: list
) -> None:
    request = replace(
        BATCH,
        sampler="Euler a",
        rng="NV",
        steps=4,
        hires=HIRES,
        mode=Mode.VARIATION,
        variation_seed=7,
        variation_strength=0.3,
    )
    actual = engine_latents(sd15_engine, decoded_latents, request)
    close_to_a1111(actual, a1111_latents(sd15_engine, request))


def test_the_comparison_tells_a_wrong_recipe_apart(
    sd15_engine: Engine, decoded_latents: list
) -> None:
    request = replace(BATCH, sampler="Euler a", steps=4, hires=HIRES)
    actual = engine_latents(sd15_engine, decoded_latents, request)
    reference = A1111Run.of(sd15_engine, request)
    base = reference.txt2img()
    wrong = {
        "a hires pass of 2 steps where A1111 runs 3": reference.img2img(
            torch.nn.functional.interpolate(base, (12, 12), mode="bilinear"), 5, 1
        ),
        "NV noise where it is CPU": a1111_latents(sd15_engine, replace(request, rng="NV")),
        "ENSD 1 where it is 0": a1111_latents(sd15_engine, replace(request, ensd=1)),
    }
    for recipe, latents in wrong.items():
        assert (actual - latents).abs().max() > 0.1, recipe


def test_a_schedule_one_step_short_is_told_apart(
    sd15_engine: Engine, decoded_latents: list
) -> None:
    request = replace(BATCH, sampler="Euler", count=1)
    actual = engine_latents(sd15_engine, decoded_latents, request)
    reference = A1111Run.of(sd15_engine, request)
    rng = reference.image_rng((4, 8, 8))
    short = reference_sigmas("Euler", "Automatic", request.steps - 1)
    wrong = reference.sample(rng, rng.next() * short[0], short, short)
    assert (actual - wrong).abs().max() > 0.1
