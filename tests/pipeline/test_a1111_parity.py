"""The engine samples as A1111 1.10 does: k-diffusion's sigmas, timesteps and step plans.

The expectations come from k-diffusion itself and from A1111's rules, written out in
tests/pipeline/a1111_reference.py and here; whole runs are compared in test_a1111_runs.py. The
engine runs on the scheduler config a checkpoint file gets (pipeline/configs/sd15,
`timestep_spacing: leading`), not the tiny model's own.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pipeline.engine import Engine, make_scheduler, plan_passes, prepare_timesteps
from pipeline.request import GenerationRequest, HiresSpec, Mode
from pipeline.samplers import SAMPLERS, SCHEDULE_NAMES
from tests.pipeline.a1111_reference import DENOISER, SIGMA_MAX, SIGMA_MIN, reference_sigmas
from tests.pipeline.engine_helpers import SMALL, run

K_SAMPLERS = [name for name, sampler in SAMPLERS.items() if not sampler.timestep_sampler]


def scheduler_for(engine: Engine, request: GenerationRequest, pass_index: int = 0) -> object:
    """The engine's scheduler with the pass's schedule set, as the engine would sample it."""
    model = engine.models.get("tiny")
    scheduler = make_scheduler(model, request)
    prepare_timesteps(scheduler, request, plan_passes(request)[pass_index], torch.device("cpu"))
    return scheduler


@pytest.mark.parametrize("steps", [7, 20])
@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
@pytest.mark.parametrize("sampler", K_SAMPLERS)
def test_scheduler_steps_through_k_diffusions_sigmas(
    sd15_engine: Engine, sampler: str, schedule: str, steps: int
) -> None:
    request = replace(SMALL, sampler=SAMPLERS[sampler].name, schedule=schedule, steps=steps)
    scheduler = scheduler_for(sd15_engine, request)
    # Two-call samplers (Heun, DPM2, DPM++ SDE) list each sigma twice; the schedule is the same.
    used = torch.unique_consecutive(scheduler.sigmas)  # type: ignore[attr-defined]
    torch.testing.assert_close(used, reference_sigmas(SAMPLERS[sampler].name, schedule, steps))


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "LMS", "DPM++ 2M", "DPM++ 2M SDE"])
def test_unet_is_called_at_k_diffusions_continuous_timesteps(
    sd15_engine: Engine, sampler: str
) -> None:
    request = replace(SMALL, sampler=sampler, steps=12)
    scheduler = scheduler_for(sd15_engine, request)
    expected = DENOISER.sigma_to_t(reference_sigmas(sampler, "Automatic", 12)[:-1])
    timesteps = scheduler.timesteps.float()  # type: ignore[attr-defined]
    torch.testing.assert_close(timesteps, expected, rtol=1e-5, atol=1e-3)


def test_sd15_sigmas_span_a1111s_range() -> None:
    # The figures A1111 users know: Karras from 14.6146 down to 0.0292.
    assert round(SIGMA_MAX, 4) == 14.6146
    assert round(SIGMA_MIN, 4) == 0.0292


class UnetCalls:
    """Counts the UNet's calls and keeps the timesteps it was called at."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.timesteps: list[float] = []
        unet = engine.models.get("tiny").pipe.unet
        forward = unet.forward

        def counting(sample: torch.Tensor, timestep: torch.Tensor, *args: object, **kw: object):
            self.timesteps.append(float(timestep))
            return forward(sample, timestep, *args, **kw)

        monkeypatch.setattr(unet, "forward", counting)


def sigma_at(t: float) -> float:
    return DENOISER.t_to_sigma(torch.tensor(t)).item()


@pytest.mark.parametrize(("strength", "steps"), [(0.5, 10), (0.75, 10), (0.75, 20), (1.0, 8)])
def test_img2img_runs_t_enc_plus_one_steps_from_a1111s_start_sigma(
    sd15_engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path, strength: float, steps: int
) -> None:
    from pipeline.png import png_bytes

    source = run(sd15_engine, SMALL)[0]
    init = tmp_path / "init.png"
    init.write_bytes(png_bytes(source.image, source.parameters))
    calls = UnetCalls(sd15_engine, monkeypatch)
    request = replace(
        SMALL, mode=Mode.IMG2IMG, init_image=str(init), strength=strength, steps=steps
    )
    run(sd15_engine, request, sampler="Euler")
    # A1111: t_enc = int(min(strength, 0.999) * steps), then t_enc + 1 steps that start at
    # sigmas[steps - t_enc - 1] of the full schedule.
    t_enc = int(min(strength, 0.999) * steps)
    full = reference_sigmas("Euler", "Automatic", steps)
    assert len(calls.timesteps) == t_enc + 1
    assert sigma_at(calls.timesteps[0]) == pytest.approx(full[steps - t_enc - 1].item(), rel=1e-4)
    assert sigma_at(calls.timesteps[-1]) == pytest.approx(full[-2].item(), rel=1e-4)


@pytest.mark.parametrize(("hires_steps", "denoise"), [(3, 0.5), (5, 0.7), (0, 0.4)])
def test_hires_pass_runs_its_steps_from_a_schedule_of_steps_over_denoise(
    sd15_engine: Engine, monkeypatch: pytest.MonkeyPatch, hires_steps: int, denoise: float
) -> None:
    calls = UnetCalls(sd15_engine, monkeypatch)
    base = 4
    hires = HiresSpec(scale=1.5, steps=hires_steps, denoise=denoise, upscaler="Latent")
    run(sd15_engine, SMALL, sampler="Euler", steps=base, hires=hires)
    # A1111: hires steps N (0 = the base steps) of a schedule of int(N / denoise) steps.
    n = hires_steps or base
    schedule = int(n / min(denoise, 0.999))
    full = reference_sigmas("Euler", "Automatic", schedule)
    second = calls.timesteps[base:]
    assert len(calls.timesteps) == base + n
    assert [sigma_at(t) for t in second] == pytest.approx(
        full[schedule - n : -1].tolist(), rel=1e-4
    )


def test_heun_makes_two_unet_calls_a_step_but_the_last(
    sd15_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = UnetCalls(sd15_engine, monkeypatch)
    hires = HiresSpec(scale=1.5, steps=3, denoise=0.5, upscaler="Latent")
    run(sd15_engine, SMALL, sampler="Heun", steps=4, hires=hires)
    # k-diffusion's sample_heun: two calls a step, one for the last step (down to sigma 0).
    assert len(calls.timesteps) == (2 * 4 - 1) + (2 * 3 - 1)


def test_dpmpp_sde_noise_is_the_images_own_whatever_shares_its_batch(
    sd15_engine: Engine, decoded_latents: list
) -> None:
    request = replace(SMALL, sampler="DPM++ SDE", steps=4)
    run(sd15_engine, request)
    alone = decoded_latents[-1]
    run(sd15_engine, request, seed=request.seed - 1, count=2)  # seeds 41 and 42 in one batch
    # Another batch size rounds the UNet's sums differently: 1e-4; another tree moves it by ~1.
    torch.testing.assert_close(decoded_latents[-1], alone, rtol=1e-5, atol=1e-3)
