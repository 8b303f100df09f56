"""Highres fix, img2img and variations on the tiny model: sizes, parameters, determinism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine import Engine, decode_latent, encode_image
from pipeline.infotext import parse_parameters
from pipeline.limits import Limits, check_request
from pipeline.png import png_bytes
from pipeline.request import HiresSpec, Mode
from pipeline.upscalers import UPSCALER_NAMES
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine


@pytest.fixture(scope="module")
def engine() -> Engine:
    return tiny_engine()


@pytest.mark.parametrize("upscaler", UPSCALER_NAMES)
def test_hires_fix_doubles_the_size_and_writes_a1111_fields(engine: Engine, upscaler: str) -> None:
    hires = HiresSpec(scale=2.0, steps=2, denoise=0.5, upscaler=upscaler)
    result = run(engine, SMALL, hires=hires)[0]
    assert result.image.size == (128, 128)
    _, _, fields = parse_parameters(result.parameters)
    assert fields["Size"] == "64x64"
    assert fields["Hires upscale"] == "2"
    assert fields["Hires steps"] == "2"
    assert fields["Hires upscaler"] == upscaler
    assert fields["Denoising strength"] == "0.5"
    again = run(engine, SMALL, hires=hires)[0]
    assert np.array_equal(pixels(result), pixels(again))


def test_hires_progress_counts_both_passes(engine: Engine) -> None:
    seen: list[tuple[int, int]] = []
    from dataclasses import replace

    from pipeline.backend import ImageTask

    request = replace(SMALL, steps=4, sampler="Euler", hires=HiresSpec(2.0, 3, 0.5))
    engine.run([ImageTask("j", 0, request)], lambda s, t, _: seen.append((s, t)), lambda: False)
    assert seen[-1] == (7, 7)  # 4 base steps + the 3 hires steps, as A1111 counts them
    assert [step for step, _ in seen] == list(range(1, 8))


def _init_png(engine: Engine, tmp_path: Path) -> Path:
    source = run(engine, SMALL)[0]
    path = tmp_path / "init.png"
    path.write_bytes(png_bytes(source.image, source.parameters))
    return path


def test_img2img_stays_closer_to_the_init_image_at_low_strength(
    engine: Engine, tmp_path: Path
) -> None:
    init = _init_png(engine, tmp_path)
    # The tiny VAE has random weights, so the reference is the init image's VAE round trip.
    vae = engine.models.get("tiny").pipe.vae
    with torch.inference_mode():
        latent = encode_image(vae, Image.open(init))
        round_trip = np.asarray(decode_latent(vae, latent[0]), dtype=np.int16)

    def distance(strength: float) -> float:
        result = run(
            engine, SMALL, mode=Mode.IMG2IMG, init_image=str(init), strength=strength, steps=10
        )
        assert result[0].image.size == (64, 64)
        return float(np.abs(pixels(result[0]) - round_trip).mean())

    assert distance(0.2) < distance(0.9)


def test_upscale_mode_resizes_the_init_image_to_the_target(engine: Engine, tmp_path: Path) -> None:
    init = _init_png(engine, tmp_path)
    result = run(
        engine, SMALL, mode=Mode.UPSCALE, init_image=str(init), strength=0.3, width=128, height=128
    )[0]
    assert result.image.size == (128, 128)
    assert "Denoising strength: 0.3" in result.parameters


def test_variation_strength_zero_is_the_parent_and_more_moves_further(engine: Engine) -> None:
    parent = pixels(run(engine, SMALL)[0])

    def varied(strength: float) -> np.ndarray:
        request = dict(mode=Mode.VARIATION, variation_seed=1234, variation_strength=strength)
        result = run(engine, SMALL, **request)[0]
        if strength > 0:
            assert "Variation seed: 1234, Variation seed strength:" in result.parameters
        return pixels(result)

    assert np.array_equal(varied(0.0), parent)
    subtle = np.abs(varied(0.1) - parent).mean()
    strong = np.abs(varied(0.4) - parent).mean()
    assert 0 < subtle < strong


def test_variations_keep_the_seed_and_step_the_variation_seed(engine: Engine) -> None:
    request = dict(mode=Mode.VARIATION, variation_seed=50, variation_strength=0.3, count=2)
    results = run(engine, SMALL, **request)
    assert [r.task.seed for r in results] == [42, 42]
    assert [r.task.variation_seed for r in results] == [50, 51]


@pytest.mark.parametrize(
    ("hires", "says"),
    [
        (HiresSpec(scale=3.0), "hires scale 3 is out of range"),
        (HiresSpec(denoise=0.0), "denoise 0 is out of range"),
        (HiresSpec(upscaler="ESRGAN 9000"), "unknown upscaler 'ESRGAN 9000'"),
        (HiresSpec(steps=500), "hires steps 500 is out of range"),
    ],
)
def test_bad_hires_settings_are_refused(hires: HiresSpec, says: str) -> None:
    from dataclasses import replace

    from pipeline.errors import UserError

    with pytest.raises(UserError, match=says):
        check_request(replace(SMALL, hires=hires), Limits())


A1111_LATENT_MODES = {
    # A1111 1.10's shared.latent_upscale_modes: its names, torch mode and antialias flag.
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


@pytest.mark.parametrize(("upscaler", "mode"), A1111_LATENT_MODES.items())
def test_latent_upscalers_interpolate_as_a1111s_modes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, upscaler: str, mode: tuple[str, bool]
) -> None:
    passes: list[torch.Tensor | None] = []
    denoise = Engine._denoise

    def recording(
        self: Engine, model: Any, group: Any, init: torch.Tensor | None, *rest: Any
    ) -> torch.Tensor:
        passes.append(None if init is None else init.clone())
        latents = denoise(self, model, group, init, *rest)
        passes.append(latents.clone())
        return latents

    monkeypatch.setattr(Engine, "_denoise", recording)
    run(engine, SMALL, hires=HiresSpec(scale=1.5, steps=1, denoise=0.5, upscaler=upscaler))
    _, first, upscaled, _ = passes
    assert first is not None and upscaled is not None
    torch_mode, antialias = mode
    expected = torch.nn.functional.interpolate(
        first.float(), size=(12, 12), mode=torch_mode, antialias=antialias
    )
    torch.testing.assert_close(upscaled, expected, rtol=0, atol=0)
