"""The engine samples as A1111 1.10 does: k-diffusion's sigmas, samplers, noise and step plans.

The expectations come from k-diffusion itself (tests/pipeline/k_diffusion_reference.py) and from
A1111's rules, written out here. The engine runs on the scheduler config a checkpoint file gets
(pipeline/configs/sd15, `timestep_spacing: leading`), not the tiny model's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch

from pipeline.engine import Engine, make_scheduler, plan_passes, prepare_timesteps
from pipeline.request import GenerationRequest, HiresSpec, Mode
from pipeline.samplers import SAMPLERS, SCHEDULE_NAMES
from tests.pipeline.engine_helpers import (
    SMALL,
    checkpoint_engine,
    encode_text,
    record_decodes,
    run,
)
from tests.pipeline.k_diffusion_reference import (
    cfg_denoiser,
    load_k_diffusion,
    sample_lcm,
    sd15_denoiser,
    sd15_lcm_denoiser,
)

sampling, _ = load_k_diffusion()
DENOISER = sd15_denoiser()
LCM_DENOISER = sd15_lcm_denoiser()
SIGMA_MIN, SIGMA_MAX = DENOISER.sigmas[0].item(), DENOISER.sigmas[-1].item()

A1111_AUTOMATIC = {
    "Euler a": "Uniform",
    "Euler": "Uniform",
    "LMS": "Uniform",
    "Heun": "Uniform",
    "DPM2": "Karras",
    "DPM2 a": "Karras",
    "DPM++ 2M": "Karras",
    "DPM++ SDE": "Karras",
    "DPM++ 2M SDE": "Exponential",
    "DPM++ 2S a": "Karras",
    "DPM++ 3M SDE": "Exponential",
    "LCM": "Uniform",
}
"""sd_samplers_kdiffusion.py of A1111 1.10: each sampler's `scheduler` option (none: uniform)."""
DISCARDS_PENULTIMATE = {"DPM2", "DPM2 a", "DPM++ 3M SDE"}
K_SAMPLERS = [name for name, sampler in SAMPLERS.items() if not sampler.timestep_sampler]


def reference_sigmas(sampler: str, schedule: str, steps: int) -> torch.Tensor:
    """What A1111's KDiffusionSampler.get_sigmas returns for SD1.5, built with k-diffusion."""
    if schedule == "Automatic":
        schedule = A1111_AUTOMATIC[sampler]
    discard = sampler in DISCARDS_PENULTIMATE
    n = steps + 1 if discard else steps
    denoiser = LCM_DENOISER if sampler == "LCM" else DENOISER
    low, high = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    if schedule == "Uniform":
        sigmas = denoiser.get_sigmas(n)
    elif schedule == "Karras":
        sigmas = sampling.get_sigmas_karras(n, low, high)
    elif schedule == "Exponential":
        sigmas = sampling.get_sigmas_exponential(n, low, high)
    else:  # SGM Uniform: n + 1 evenly spaced timesteps from the last, the final one dropped
        start = denoiser.sigma_to_t(torch.tensor(high))
        end = denoiser.sigma_to_t(torch.tensor(low))
        t = torch.linspace(float(start), float(end), n + 1)[:-1]
        sigmas = sampling.append_zero(denoiser.t_to_sigma(t))
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas


@pytest.fixture(scope="module")
def engine() -> Engine:
    return checkpoint_engine()


def scheduler_for(engine: Engine, request: GenerationRequest, pass_index: int = 0) -> object:
    """The engine's scheduler with the pass's schedule set, as the engine would sample it."""
    model = engine.models.get("tiny")
    scheduler = make_scheduler(model, request, [request.seed])
    prepare_timesteps(scheduler, request, plan_passes(request)[pass_index], torch.device("cpu"))
    return scheduler


@pytest.mark.parametrize("steps", [7, 20])
@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
@pytest.mark.parametrize("sampler", K_SAMPLERS)
def test_scheduler_steps_through_k_diffusions_sigmas(
    engine: Engine, sampler: str, schedule: str, steps: int
) -> None:
    request = replace(SMALL, sampler=SAMPLERS[sampler].name, schedule=schedule, steps=steps)
    scheduler = scheduler_for(engine, request)
    # Two-call samplers (Heun, DPM2, DPM++ SDE) list each sigma twice; the schedule is the same.
    used = torch.unique_consecutive(scheduler.sigmas)  # type: ignore[attr-defined]
    torch.testing.assert_close(used, reference_sigmas(SAMPLERS[sampler].name, schedule, steps))


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "LMS", "DPM++ 2M", "DPM++ 2M SDE"])
def test_unet_is_called_at_k_diffusions_continuous_timesteps(engine: Engine, sampler: str) -> None:
    request = replace(SMALL, sampler=sampler, steps=12)
    scheduler = scheduler_for(engine, request)
    expected = DENOISER.sigma_to_t(reference_sigmas(sampler, "Automatic", 12)[:-1])
    timesteps = scheduler.timesteps.float()  # type: ignore[attr-defined]
    torch.testing.assert_close(timesteps, expected, rtol=1e-5, atol=1e-3)


def test_sd15_sigmas_span_a1111s_range() -> None:
    # The figures A1111 users know: Karras from 14.6146 down to 0.0292.
    assert round(SIGMA_MAX, 4) == 14.6146
    assert round(SIGMA_MIN, 4) == 0.0292


@pytest.fixture
def decoded_latents(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list:
    return record_decodes(engine, monkeypatch)


def a1111_txt2img(
    engine: Engine,
    request: GenerationRequest,
    sample: Callable[..., torch.Tensor],
    sigmas: torch.Tensor,
    noise: str = "none",
) -> torch.Tensor:
    """k-diffusion's `sample` run on the tiny UNet the way A1111 runs it, from the same prompts.

    The noise is A1111's CPU RNG: one generator per image seeded with its seed, which makes the
    initial noise and then every ancestral step's noise; SDE samplers get A1111's Brownian tree.
    """
    model = engine.models.get("tiny")
    with torch.inference_mode():
        cond, uncond = encode_text(engine, request.prompt), encode_text(engine, request.negative)
        lcm = request.sampler == "LCM"
        denoiser = (sd15_lcm_denoiser if lcm else sd15_denoiser)(model.pipe.unet)
        guided = cfg_denoiser(denoiser, cond, uncond, request.cfg)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        shape = (1, 4, request.height // 8, request.width // 8)
        x = torch.randn(shape, generator=generator) * sigmas[0]
        options = {}
        if noise == "ancestral":
            options["noise_sampler"] = lambda *_: torch.randn(shape, generator=generator)
        elif noise == "brownian":
            low, high = sigmas[sigmas > 0].min(), sigmas.max()
            options["noise_sampler"] = sampling.BrownianTreeNoiseSampler(
                x, low, high, seed=[request.seed]
            )
        return sample(guided, x, sigmas, disable=True, **options)


def sample_function(name: str) -> Callable[..., torch.Tensor]:
    """k-diffusion's sampling function; A1111's own for LCM, which k-diffusion lacks."""
    return sample_lcm if name == "sample_lcm" else getattr(sampling, name)


FULL_RUNS = [
    ("Euler", "Automatic", "sample_euler", "none"),
    ("Euler a", "Automatic", "sample_euler_ancestral", "ancestral"),
    ("Heun", "Automatic", "sample_heun", "none"),
    ("LMS", "Automatic", "sample_lms", "none"),
    ("DPM2", "Automatic", "sample_dpm_2", "none"),
    ("DPM2 a", "Automatic", "sample_dpm_2_ancestral", "ancestral"),
    ("DPM++ 2M", "Automatic", "sample_dpmpp_2m", "none"),
    ("DPM++ 2M", "Uniform", "sample_dpmpp_2m", "none"),
    ("DPM++ SDE", "Automatic", "sample_dpmpp_sde", "brownian"),
    ("DPM++ 2M SDE", "Automatic", "sample_dpmpp_2m_sde", "brownian"),
    ("DPM++ 2M SDE", "Karras", "sample_dpmpp_2m_sde", "brownian"),
    ("DPM++ 3M SDE", "Automatic", "sample_dpmpp_3m_sde", "brownian"),
    ("DPM++ 3M SDE", "Karras", "sample_dpmpp_3m_sde", "brownian"),
    ("DPM++ 2S a", "Automatic", "sample_dpmpp_2s_ancestral", "ancestral"),
    ("LCM", "Automatic", "sample_lcm", "ancestral"),
    ("LCM", "Karras", "sample_lcm", "ancestral"),
    ("Euler", "Exponential", "sample_euler", "none"),
    ("Euler", "SGM Uniform", "sample_euler", "none"),
]


@pytest.mark.parametrize(("sampler", "schedule", "function", "noise"), FULL_RUNS)
def test_whole_run_equals_k_diffusion_with_a1111s_noise(
    engine: Engine, decoded_latents: list, sampler: str, schedule: str, function: str, noise: str
) -> None:
    request = replace(SMALL, sampler=sampler, schedule=schedule, steps=8, cfg=7.0)
    run(engine, request)
    sigmas = reference_sigmas(sampler, schedule, request.steps)
    expected = a1111_txt2img(engine, request, sample_function(function), sigmas, noise)
    # The latents are about 40 in size here; a schedule one step off moves them by about 1.
    torch.testing.assert_close(decoded_latents[-1], expected, rtol=1e-5, atol=1e-3)


def test_the_whole_run_check_tells_schedules_apart(engine: Engine, decoded_latents: list) -> None:
    request = replace(SMALL, sampler="Euler", steps=8)
    run(engine, request)
    wrong = a1111_txt2img(engine, request, sampling.sample_euler, DENOISER.get_sigmas(7))
    assert (decoded_latents[-1] - wrong).abs().max() > 0.1


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
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path, strength: float, steps: int
) -> None:
    from pipeline.png import png_bytes

    source = run(engine, SMALL)[0]
    init = tmp_path / "init.png"
    init.write_bytes(png_bytes(source.image, source.parameters))
    calls = UnetCalls(engine, monkeypatch)
    request = replace(
        SMALL, mode=Mode.IMG2IMG, init_image=str(init), strength=strength, steps=steps
    )
    run(engine, request, sampler="Euler")
    # A1111: t_enc = int(min(strength, 0.999) * steps), then t_enc + 1 steps that start at
    # sigmas[steps - t_enc - 1] of the full schedule.
    t_enc = int(min(strength, 0.999) * steps)
    full = reference_sigmas("Euler", "Automatic", steps)
    assert len(calls.timesteps) == t_enc + 1
    assert sigma_at(calls.timesteps[0]) == pytest.approx(full[steps - t_enc - 1].item(), rel=1e-4)
    assert sigma_at(calls.timesteps[-1]) == pytest.approx(full[-2].item(), rel=1e-4)


@pytest.mark.parametrize(("hires_steps", "denoise"), [(3, 0.5), (5, 0.7), (0, 0.4)])
def test_hires_pass_runs_its_steps_from_a_schedule_of_steps_over_denoise(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, hires_steps: int, denoise: float
) -> None:
    calls = UnetCalls(engine, monkeypatch)
    base = 4
    hires = HiresSpec(scale=1.5, steps=hires_steps, denoise=denoise, upscaler="Latent")
    run(engine, SMALL, sampler="Euler", steps=base, hires=hires)
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
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = UnetCalls(engine, monkeypatch)
    hires = HiresSpec(scale=1.5, steps=3, denoise=0.5, upscaler="Latent")
    run(engine, SMALL, sampler="Heun", steps=4, hires=hires)
    # k-diffusion's sample_heun: two calls a step, one for the last step (down to sigma 0).
    assert len(calls.timesteps) == (2 * 4 - 1) + (2 * 3 - 1)


def test_dpmpp_sde_noise_is_the_images_own_whatever_shares_its_batch(
    engine: Engine, decoded_latents: list
) -> None:
    request = replace(SMALL, sampler="DPM++ SDE", steps=4)
    run(engine, request)
    alone = decoded_latents[-1]
    run(engine, request, seed=request.seed - 1, count=2)  # seeds 41 and 42 in one batch
    # Another batch size rounds the UNet's sums differently: 1e-4; another tree moves it by ~1.
    torch.testing.assert_close(decoded_latents[-1], alone, rtol=1e-5, atol=1e-3)
