"""The engine on the tiny model: determinism, seeds, samplers, clip skip, cancel, NaN decode."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pipeline.backend import BatchInterrupted, ImageTask
from pipeline.engine import Engine, decode_latent
from pipeline.infotext import parse_parameters
from pipeline.png import png_bytes, read_png
from pipeline.samplers import SAMPLER_NAMES
from pipeline.tiny import build_tiny_components
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_engine()


def test_same_request_gives_identical_pixels(engine: Engine) -> None:
    first, second = run(engine, SMALL), run(engine, SMALL)
    assert np.array_equal(pixels(first[0]), pixels(second[0]))


def test_image_i_uses_seed_plus_i_like_a1111(engine: Engine) -> None:
    pair = run(engine, SMALL, count=2, seed=42)
    alone = run(engine, SMALL, count=1, seed=43)
    assert [result.task.seed for result in pair] == [42, 43]
    assert "Seed: 43," in pair[1].parameters
    assert np.abs(pixels(pair[1]) - pixels(alone[0])).max() <= 1
    assert not np.array_equal(pixels(pair[0]), pixels(pair[1]))


def test_a_job_batched_with_another_prompt_keeps_its_pixels(engine: Engine) -> None:
    mine = ImageTask("mine", 0, SMALL)
    other = ImageTask("other", 0, SMALL.__class__(**{**SMALL.__dict__, "prompt": "a blue car"}))
    together = engine.run([mine, other], lambda *_: None, lambda: False)
    alone = engine.run([mine], lambda *_: None, lambda: False)
    assert together[0].task == mine
    assert np.abs(pixels(together[0]) - pixels(alone[0])).max() <= 1


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_makes_a_finite_image(engine: Engine, sampler: str) -> None:
    result = run(engine, SMALL, sampler=sampler, steps=2)[0]
    assert result.image.size == (64, 64)
    assert f"Sampler: {sampler}," in result.parameters
    assert pixels(result).std() > 0


def test_samplers_differ(engine: Engine) -> None:
    euler = pixels(run(engine, SMALL, sampler="Euler")[0])
    ancestral = pixels(run(engine, SMALL, sampler="Euler a")[0])
    assert not np.array_equal(euler, ancestral)


def test_clip_skip_changes_the_image(engine: Engine) -> None:
    plain = run(engine, SMALL)[0]
    skipped = run(engine, SMALL, clip_skip=2)[0]
    assert not np.array_equal(pixels(plain), pixels(skipped))
    assert "Clip skip: 2" in skipped.parameters


def test_progress_reports_every_step_and_cancel_stops_between_steps(engine: Engine) -> None:
    seen: list[tuple[int, int]] = []
    tasks = [ImageTask("test", 0, SMALL.__class__(**{**SMALL.__dict__, "steps": 6}))]
    engine.run(tasks, lambda step, total, _: seen.append((step, total)), lambda: False)
    assert seen == [(step, 6) for step in range(1, 7)]

    stopped_after: list[int] = []
    with pytest.raises(BatchInterrupted):
        engine.run(
            tasks,
            lambda step, total, _: stopped_after.append(step),
            lambda: len(stopped_after) >= 2,
        )
    assert stopped_after == [1, 2]


def test_previews_are_small_images_per_task(engine: Engine) -> None:
    previews = []
    tasks = [ImageTask("test", index, SMALL) for index in range(2)]
    engine.run(tasks, lambda step, total, make: previews.append(make()), lambda: False)
    assert len(previews[-1]) == 2
    assert previews[-1][0].size == (8, 8)


def test_overflowing_fp16_decode_is_retried_in_fp32(caplog: pytest.LogCaptureFixture) -> None:
    vae = build_tiny_components()["vae"].half()
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e4)  # activations beyond fp16's 65504 become inf/NaN
        latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))
        assert not torch.isfinite(vae.decode(latent[None].half() / 0.18215).sample).all()
        with caplog.at_level(logging.WARNING):
            image = decode_latent(vae, latent)
    assert "decoding again in fp32" in caplog.text
    assert np.asarray(image).std() > 0
    assert vae.dtype == torch.float16


def test_decoded_bytes_are_truncated_as_a1111_makes_them() -> None:
    vae = build_tiny_components()["vae"]
    latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(3)) * 4
    with torch.no_grad():
        decoded = vae.decode(latent[None] / vae.config.scaling_factor).sample[0]
        image = np.asarray(decode_latent(vae, latent))
    # A1111 1.10 processing.py: clamp((x + 1) / 2, 0, 1), then 255 * it, astype(np.uint8).
    scaled = 255.0 * np.moveaxis(((decoded + 1) / 2).clamp(0, 1).numpy(), 0, 2)
    assert np.array_equal(image, scaled.astype(np.uint8))
    assert not np.array_equal(image, np.round(scaled).astype(np.uint8))


def test_png_parameters_round_trip(engine: Engine, tmp_path) -> None:
    result = run(engine, SMALL, negative="blurry, lowres", clip_skip=2)[0]
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(result.image, result.parameters))
    image, text = read_png(path)
    prompt, negative, fields = parse_parameters(text or "")
    assert (prompt, negative) == (SMALL.prompt, "blurry, lowres")
    assert fields["Seed"] == "42"
    assert fields["Size"] == "64x64"
    assert fields["Clip skip"] == "2"
    assert fields["Model"] == "tiny"
    assert np.array_equal(np.asarray(image), np.asarray(result.image))


def test_attention_weights_change_the_image(engine: Engine) -> None:
    plain = run(engine, SMALL, prompt="a red fox in the snow")[0]
    weighted = run(engine, SMALL, prompt="a red (fox:1.5) in the snow")[0]
    assert not np.array_equal(pixels(plain), pixels(weighted))
