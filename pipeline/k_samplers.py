"""Samplers diffusers has no equal of, as schedulers the engine's step loop drives.

diffusers' third-order SDE solver is not k-diffusion's `sample_dpmpp_3m_sde` (its second
difference enters with another sign; a whole run ends far from A1111's), it has no ancestral
single-step DPM++ at all, and its LCMScheduler keeps its own timesteps where A1111 samples LCM
k-diffusion style. These classes do k-diffusion's updates (and A1111's LCM), written from their
algorithms, behind the part of the diffusers scheduler interface the engine uses: one UNet call
per entry of `timesteps`, `scale_model_input`, `step`, `add_noise`. The sigmas are installed
whole (pipeline/schedules.py `install_sigmas` calls `use_sigmas`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from pipeline.schedules import DiscreteSigmas


@dataclass
class StepOutput:
    prev_sample: torch.Tensor


class KScheduler:
    """Shared state: the model's config, the pass's sigmas and the sigma of each UNet call.

    The UNet predicts noise (eps); k-diffusion's CompVisDenoiser turns that into the denoised
    latents as x - sigma x eps, with the input scaled by 1 / sqrt(sigma^2 + 1).
    """

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: Any) -> None:
        import diffusers

        self.config = config
        # Only read for a model with trained betas: DiscreteSigmas.of uses the config otherwise.
        self.alphas_cumprod = diffusers.DDPMScheduler.from_config(config).alphas_cumprod
        self.sigmas = torch.zeros(1)
        self.timesteps = torch.zeros(0)
        self._calls: list[float] = []
        self._index = 0

    @classmethod
    def from_config(cls, config: Any, **_overrides: Any) -> KScheduler:
        return cls(config)

    def set_timesteps(self, steps: int, device: Any = None) -> None:
        """The schedule comes whole from `use_sigmas`; diffusers' own spacing is never used."""

    def use_sigmas(self, sigmas: torch.Tensor, model: DiscreteSigmas, device: Any) -> None:
        """Step through exactly `sigmas` (ending in 0), calling the UNet at k-diffusion's t."""
        self.sigmas = sigmas.float().cpu()
        self._calls = self.call_sigmas([float(sigma) for sigma in self.sigmas])
        self.timesteps = model.sigma_to_t(torch.tensor(self._calls)).to(device)
        self._index = 0

    def call_sigmas(self, sigmas: Sequence[float]) -> list[float]:
        """The sigma of each UNet call: one per step unless a sampler evaluates twice."""
        return list(sigmas[:-1])

    def scale_model_input(self, sample: torch.Tensor, timestep: Any) -> torch.Tensor:
        return sample / math.sqrt(self._calls[self._index] ** 2 + 1)

    def add_noise(self, start: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        """k-diffusion's start: the init latents plus noise at the first sigma."""
        return start + noise * float(self.sigmas[0])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Sequence[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
    ) -> StepOutput:
        denoised = sample - self._calls[self._index] * model_output
        noise = _StepNoise(sample, generator, variance_noise)
        latents = self.advance(self._index, sample, denoised, noise)
        self._index += 1
        return StepOutput(latents)

    def advance(
        self, call: int, x: torch.Tensor, denoised: torch.Tensor, noise: _StepNoise
    ) -> torch.Tensor:
        raise NotImplementedError


class _StepNoise:
    """A step's noise: given (a Brownian tree's), or drawn like diffusers' ancestral schedulers
    draw theirs, through this module's `randn_tensor` with each image's own generator (which
    pipeline/noise.py may route to the request's RNG)."""

    def __init__(
        self,
        like: torch.Tensor,
        generators: Sequence[torch.Generator] | None,
        given: torch.Tensor | None,
    ) -> None:
        self._like, self._generators, self._given = like, generators, given

    def draw(self) -> torch.Tensor:
        like = self._like
        if self._given is not None:
            return self._given.to(like.device, like.dtype)
        generator = list(self._generators) if self._generators is not None else None
        return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def ancestral_step(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step with eta 1, as k-diffusion splits it."""
    if sigma_next == 0:
        return 0.0, 0.0
    up = min(sigma_next, math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


class DpmPlusPlus2SAncestral(KScheduler):
    """DPM++ 2S a (`sample_dpmpp_2s_ancestral`): a half step in log sigma towards the
    ancestral step's target, a second UNet call there, then fresh noise; the last step,
    whose target is 0, is one Euler call."""

    def call_sigmas(self, sigmas: Sequence[float]) -> list[float]:
        calls = []
        for sigma, sigma_next in itertools.pairwise(sigmas):
            calls.append(sigma)
            down, _ = ancestral_step(sigma, sigma_next)
            if down > 0:
                calls.append(math.sqrt(sigma * down))  # halfway in log sigma
        return calls

    def use_sigmas(self, sigmas: torch.Tensor, model: DiscreteSigmas, device: Any) -> None:
        super().use_sigmas(sigmas, model, device)
        self._step = 0
        self._start: torch.Tensor | None = None
        """The step's starting latents while its second call is pending."""

    def advance(
        self, call: int, x: torch.Tensor, denoised: torch.Tensor, noise: _StepNoise
    ) -> torch.Tensor:
        sigma, sigma_next = float(self.sigmas[self._step]), float(self.sigmas[self._step + 1])
        down, up = ancestral_step(sigma, sigma_next)
        if down == 0:
            x = denoised  # Euler to sigma 0
        elif self._start is None:
            self._start = x
            half = math.log(sigma / down) / 2
            return (self._calls[call + 1] / sigma) * x - math.expm1(-half) * denoised
        else:
            start, self._start = self._start, None
            x = (down / sigma) * start - math.expm1(-math.log(sigma / down)) * denoised
        self._step += 1
        if sigma_next > 0:
            x = x + noise.draw() * up
        return x


class DpmPlusPlus3MSde(KScheduler):
    """DPM++ 3M SDE (`sample_dpmpp_3m_sde`, eta 1): a third-order multistep SDE solver
    stepping in log sigma, with noise from each image's Brownian tree; the step to sigma 0
    returns the denoised latents."""

    def use_sigmas(self, sigmas: torch.Tensor, model: DiscreteSigmas, device: Any) -> None:
        super().use_sigmas(sigmas, model, device)
        self._history: list[tuple[torch.Tensor, float]] = []
        """(denoised, step size h) of the previous steps, newest first."""

    def advance(
        self, call: int, x: torch.Tensor, denoised: torch.Tensor, noise: _StepNoise
    ) -> torch.Tensor:
        sigma, sigma_next = float(self.sigmas[call]), float(self.sigmas[call + 1])
        if sigma_next == 0:
            return denoised
        h = math.log(sigma / sigma_next)
        h_eta = 2 * h
        x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        if len(self._history) >= 2:
            (denoised_1, h_1), (denoised_2, h_2) = self._history[:2]
            r0, r1 = h_1 / h, h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif self._history:
            denoised_1, h_1 = self._history[0]
            x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
        self._history = [(denoised, h), *self._history[:1]]
        return x + noise.draw() * sigma_next * math.sqrt(-math.expm1(-2 * h))


class LatentConsistency(KScheduler):
    """LCM as A1111 runs it: each UNet call at the distilled timestep nearest its sigma, the
    denoised latents through LCM's boundary condition (sigma data 0.5, the timestep times 10),
    then fresh noise at the next sigma. `model` (use_sigmas) is the distilled model
    (pipeline/schedules.py `DiscreteSigmas.distilled`)."""

    SIGMA_DATA = 0.5
    TIMESTEP_SCALE = 10.0

    def use_sigmas(self, sigmas: torch.Tensor, model: DiscreteSigmas, device: Any) -> None:
        super().use_sigmas(sigmas, model, device)
        skip = self.config.num_train_timesteps // len(model.sigmas)
        nearest = (torch.tensor(self._calls).log() - model.log_sigmas[:, None]).abs().argmin(0)
        self._timesteps = [float(index) * skip + skip - 1 for index in nearest]
        self.timesteps = torch.tensor(self._timesteps).to(device)

    def advance(
        self, call: int, x: torch.Tensor, denoised: torch.Tensor, noise: _StepNoise
    ) -> torch.Tensor:
        scaled = self._timesteps[call] * self.TIMESTEP_SCALE
        c_skip = self.SIGMA_DATA**2 / (scaled**2 + self.SIGMA_DATA**2)
        c_out = scaled / math.sqrt(scaled**2 + self.SIGMA_DATA**2)
        x_0 = c_out * denoised + c_skip * x
        sigma_next = float(self.sigmas[call + 1])
        return x_0 + noise.draw() * sigma_next if sigma_next > 0 else x_0


K_SCHEDULERS: dict[str, type[KScheduler]] = {
    "DpmPlusPlus2SAncestral": DpmPlusPlus2SAncestral,
    "DpmPlusPlus3MSde": DpmPlusPlus3MSde,
    "LatentConsistency": LatentConsistency,
}
"""The schedulers of this module by the name pipeline/samplers.py gives them."""
