"""A1111 1.10's sampling rebuilt from k-diffusion and A1111's rules: the engine's reference.

Each step is what A1111's processing.py, sd_samplers_kdiffusion.py, sd_samplers_common.py and
rng.py do, read there and written out here: KDiffusionSampler.get_sigmas' schedules; an ImageRNG
per pass whose first draw is the initial noise; k-diffusion's sampling functions with
`torch.randn_like` answered by the ImageRNG's next draw (A1111's TorchHijack); for the SDE
samplers a Brownian tree per image over the whole schedule, its noise from a fresh generator per
interval seed (A1111's replacement of torchsde's `_randn`); img2img and the hires pass starting
from `sigmas[steps - t_enc - 1]`. NV numbers come from `pipeline.noise.PhiloxGenerator`, which
tests/pipeline/test_noise.py checks against Random123's and A1111's published numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from PIL import Image

from pipeline.backend import ImageTask
from pipeline.engine import Engine
from pipeline.noise import PhiloxGenerator
from pipeline.request import GenerationRequest
from tests.pipeline.engine_helpers import encode_text
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
MAX_STRENGTH = 0.999


@dataclass(frozen=True)
class A1111Sampler:
    """One row of A1111 1.10's samplers_k_diffusion table, as far as sampling needs it."""

    function: str
    automatic: str = "Uniform"
    """Its `scheduler` option (Automatic means it); none is the model's uniform schedule."""
    discard_penultimate: bool = False
    brownian_noise: bool = False
    lcm: bool = False
    """A1111's LCM sampler, with its own denoiser (sd_samplers_lcm.py)."""


A1111_SAMPLERS = {
    "Euler a": A1111Sampler("sample_euler_ancestral"),
    "Euler": A1111Sampler("sample_euler"),
    "LMS": A1111Sampler("sample_lms"),
    "Heun": A1111Sampler("sample_heun"),
    "DPM2": A1111Sampler("sample_dpm_2", "Karras", discard_penultimate=True),
    "DPM2 a": A1111Sampler("sample_dpm_2_ancestral", "Karras", discard_penultimate=True),
    "DPM++ 2M": A1111Sampler("sample_dpmpp_2m", "Karras"),
    "DPM++ SDE": A1111Sampler("sample_dpmpp_sde", "Karras", brownian_noise=True),
    "DPM++ 2M SDE": A1111Sampler("sample_dpmpp_2m_sde", "Exponential", brownian_noise=True),
    "DPM++ 2S a": A1111Sampler("sample_dpmpp_2s_ancestral", "Karras"),
    "DPM++ 3M SDE": A1111Sampler(
        "sample_dpmpp_3m_sde", "Exponential", discard_penultimate=True, brownian_noise=True
    ),
    "LCM": A1111Sampler("sample_lcm", lcm=True),
}


def reference_sigmas(sampler: str, schedule: str, steps: int) -> torch.Tensor:
    """What A1111's KDiffusionSampler.get_sigmas returns for SD1.5, built with k-diffusion."""
    row = A1111_SAMPLERS[sampler]
    if schedule == "Automatic":
        schedule = row.automatic
    n = steps + 1 if row.discard_penultimate else steps
    denoiser = LCM_DENOISER if row.lcm else DENOISER
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
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if row.discard_penultimate else sigmas


class CpuGenerator:
    """A1111's RNG CPU generator: torch's CPU generator seeded with the seed."""

    def __init__(self, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self._generator)


def a1111_generator(rng: str, seed: int) -> Any:
    """A1111's create_generator on a machine without CUDA, where GPU noise means NV's."""
    return CpuGenerator(seed) if rng.upper() == "CPU" else PhiloxGenerator(seed)


def a1111_slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's slerp, written from its documented behaviour: norms along the height axis."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    omega = torch.acos((low_norm * high_norm).sum(1))
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low + (
        torch.sin(strength * omega) / so
    ).unsqueeze(1) * high


class ReferenceImageRNG:
    """A1111's ImageRNG: a generator per seed. Its first `next()` is the initial noise, each
    slerped with its subseed's first draw; an ENSD then reseeds every generator with seed + ENSD;
    later calls are the step noise."""

    def __init__(
        self,
        rng: str,
        shape: tuple[int, ...],
        seeds: Sequence[int],
        subseeds: Sequence[int | None],
        subseed_strength: float,
        ensd: int,
    ) -> None:
        self.rng, self.shape, self.seeds, self.ensd = rng, shape, seeds, ensd
        self.subseeds, self.subseed_strength = subseeds, subseed_strength
        self.generators = [a1111_generator(rng, seed) for seed in seeds]
        self.is_first = True

    def next(self) -> torch.Tensor:
        if not self.is_first:
            return torch.stack([generator.randn(self.shape) for generator in self.generators])
        self.is_first = False
        images = []
        for subseed, generator in zip(self.subseeds, self.generators, strict=True):
            noise = generator.randn(self.shape)
            if subseed is not None:
                subnoise = a1111_generator(self.rng, subseed).randn(self.shape)
                noise = a1111_slerp(self.subseed_strength, noise, subnoise)
            images.append(noise)
        if self.ensd:
            self.generators = [a1111_generator(self.rng, seed + self.ensd) for seed in self.seeds]
        return torch.stack(images)


class TorchHijack:
    """A1111's stand-in for `torch` inside k_diffusion.sampling: randn_like is the next draw."""

    def __init__(self, rng: ReferenceImageRNG) -> None:
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        if name == "randn_like":
            return lambda x: self._rng.next()
        return getattr(torch, name)


@contextlib.contextmanager
def a1111_hooks(rng: ReferenceImageRNG) -> Iterator[None]:
    """k-diffusion and torchsde drawing noise as A1111 makes them for one sampling call."""

    def randn_local(size: Sequence[int], dtype: Any, device: Any, seed: int) -> torch.Tensor:
        return a1111_generator(rng.rng, int(seed)).randn(tuple(size)).to(device, dtype)

    with (
        mock.patch.object(sampling, "torch", TorchHijack(rng)),
        mock.patch("torchsde._brownian.brownian_interval._randn", randn_local),
    ):
        yield


@dataclass(frozen=True)
class A1111Run:
    """One request's images as A1111 makes them: the tiny UNet behind A1111's CFG denoiser."""

    request: GenerationRequest
    seeds: list[int]
    subseeds: list[int | None]
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @classmethod
    def of(cls, engine: Engine, request: GenerationRequest) -> A1111Run:
        model = engine.models.get("tiny")
        tasks = [ImageTask("reference", index, request) for index in range(request.count)]
        with torch.inference_mode():
            cond = encode_text(engine, request.prompt, request.clip_skip)
            uncond = encode_text(engine, request.negative, request.clip_skip)
        lcm = A1111_SAMPLERS[request.sampler].lcm
        denoiser = (sd15_lcm_denoiser if lcm else sd15_denoiser)(model.pipe.unet)
        batch = request.count
        guided = cfg_denoiser(
            denoiser, cond.repeat(batch, 1, 1), uncond.repeat(batch, 1, 1), request.cfg
        )
        return cls(
            request,
            [task.seed for task in tasks],
            [task.variation_seed for task in tasks],
            guided,
        )

    def image_rng(self, shape: tuple[int, ...]) -> ReferenceImageRNG:
        request = self.request
        return ReferenceImageRNG(
            request.rng, shape, self.seeds, self.subseeds, request.variation_strength, request.ensd
        )

    def txt2img(self) -> torch.Tensor:
        """KDiffusionSampler.sample: x = first draw x sigmas[0], the whole schedule."""
        request = self.request
        rng = self.image_rng((4, request.height // 8, request.width // 8))
        sigmas = reference_sigmas(request.sampler, request.schedule, request.steps)
        return self.sample(rng, rng.next() * sigmas[0], sigmas, sigmas)

    def img2img(self, init: torch.Tensor, steps: int, t_enc: int) -> torch.Tensor:
        """KDiffusionSampler.sample_img2img from `init`, with a new ImageRNG at its shape."""
        rng = self.image_rng(tuple(init.shape[1:]))
        noise = rng.next()
        sigmas = reference_sigmas(self.request.sampler, self.request.schedule, steps)
        schedule = sigmas[steps - t_enc - 1 :]
        return self.sample(rng, init + noise * schedule[0], schedule, sigmas)

    def hires(self, base: torch.Tensor) -> torch.Tensor:
        """sample_hr_pass with the Latent upscaler: bilinear, then Hires steps N of a schedule
        of int(N / denoise) steps (setup_img2img_steps with steps given: t_enc = N - 1)."""
        request = self.request
        assert request.hires is not None
        scale = request.hires.scale
        size = (int(request.height * scale) // 8, int(request.width * scale) // 8)
        upscaled = torch.nn.functional.interpolate(
            base, size=size, mode="bilinear", antialias=False
        )
        run = request.hires.steps or request.steps
        steps = int(run / min(request.hires.denoise, MAX_STRENGTH))
        return self.img2img(upscaled, steps, run - 1)

    def sample(
        self,
        rng: ReferenceImageRNG,
        x: torch.Tensor,
        schedule: torch.Tensor,
        whole: torch.Tensor,
    ) -> torch.Tensor:
        """k-diffusion's sampler over `schedule`; SDE trees span the `whole` schedule."""
        row = A1111_SAMPLERS[self.request.sampler]
        with a1111_hooks(rng), torch.inference_mode():
            options = {}
            if row.brownian_noise:
                low, high = whole[whole > 0].min(), whole.max()
                options["noise_sampler"] = sampling.BrownianTreeNoiseSampler(
                    x, low, high, seed=self.seeds
                )
            sample = sample_lcm if row.lcm else getattr(sampling, row.function)
            return sample(self.model, x, schedule, disable=True, **options)


def a1111_init_latents(engine: Engine, image_path: Path, count: int) -> torch.Tensor:
    """The init image as A1111's img2img encodes it (pixels / 255 * 2 - 1), once per image.

    A1111 samples the VAE's latent distribution; the engine takes its mean, and so does this.
    """
    vae = engine.models.get("tiny").pipe.vae
    pixels = np.asarray(Image.open(image_path).convert("RGB")).astype(np.float32) / 255.0
    batch = torch.from_numpy(np.moveaxis(pixels, 2, 0)).unsqueeze(0) * 2 - 1
    with torch.inference_mode():
        latent = vae.encode(batch).latent_dist.mean * vae.config.scaling_factor
    return latent.repeat(count, 1, 1, 1)


def a1111_latents(engine: Engine, request: GenerationRequest) -> torch.Tensor:
    """The final latents of every image of `request`, as A1111 1.10 makes them."""
    reference = A1111Run.of(engine, request)
    if request.init_image is not None:
        init = a1111_init_latents(engine, Path(request.init_image), request.count)
        strength = min(request.strength or 0.75, MAX_STRENGTH)
        return reference.img2img(init, request.steps, int(strength * request.steps))
    base = reference.txt2img()
    return base if request.hires is None else reference.hires(base)
