"""A1111's sigma schedules (k-diffusion's), and making a diffusers scheduler step through one.

A1111 samples with k-diffusion on the model's 1000 discrete sigmas, at continuous timesteps
(no quantization). diffusers derives its sigmas from `timestep_spacing`, which for SD1.5's
`leading` starts at sigma 11.7 instead of 14.6; so the engine computes the schedule here and
hands it to the scheduler whole. docs/a1111.md lists what was checked against k-diffusion.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pipeline.samplers import EXPONENTIAL, KARRAS, SGM_UNIFORM, UNIFORM, Sampler

KARRAS_RHO = 7.0
_BETA_SCHEDULES = ("linear", "scaled_linear")


class DiscreteSigmas:
    """The model's training sigmas and k-diffusion's continuous t <-> sigma maps over them."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod.float().cpu()
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def distilled(self, steps: int) -> DiscreteSigmas:
        """The model seen at the `steps` timesteps a consistency model (LCM) is distilled on:
        every (1000 / steps)th, ending at the last (19, 39, ..., 999 for 50), as A1111 sees it."""
        skip = len(self.alphas_cumprod) // steps
        return DiscreteSigmas(self.alphas_cumprod[skip - 1 :: skip])

    @classmethod
    def of(cls, scheduler: Any) -> DiscreteSigmas:
        """The sigmas of the model a scheduler was configured for, made as the LDM code does.

        LDM (whose buffers A1111 reads) makes the betas in float64 and stores float32;
        diffusers makes them in float32. The last bits matter to the Brownian-tree samplers,
        whose noise is not smooth in sigma.
        """
        config = scheduler.config
        if config.trained_betas is not None or config.beta_schedule not in _BETA_SCHEDULES:
            return cls(scheduler.alphas_cumprod)
        start, end = config.beta_start, config.beta_end
        steps = config.num_train_timesteps
        if config.beta_schedule == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
        else:
            betas = torch.linspace(start, end, steps, dtype=torch.float64)
        return cls(torch.cumprod(1 - betas, dim=0))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at fractional timesteps, interpolated in log sigma."""
        t = t.float()
        low, high, weight = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]).exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional timestep of each sigma: what the UNet is called with."""
        log_sigma = sigma.float().log()
        dists = log_sigma - self.log_sigmas[:, None]
        low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=len(self.log_sigmas) - 2)
        low_log, high_log = self.log_sigmas[low], self.log_sigmas[low + 1]
        weight = ((low_log - log_sigma) / (low_log - high_log)).clamp(0, 1)
        return ((1 - weight) * low + weight * (low + 1)).view(sigma.shape)

    def uniform(self, n: int) -> torch.Tensor:
        """n sigmas at evenly spaced timesteps from the last to the first, then 0."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return _append_zero(self.t_to_sigma(t))

    def sgm_uniform(self, n: int) -> torch.Tensor:
        """Evenly spaced timesteps like `uniform`, but n + 1 of them with the last dropped."""
        start = self.sigma_to_t(torch.tensor(self.sigma_max))
        end = self.sigma_to_t(torch.tensor(self.sigma_min))
        return _append_zero(self.t_to_sigma(torch.linspace(float(start), float(end), n + 1)[:-1]))

    def karras(self, n: int) -> torch.Tensor:
        """Karras et al. (2022): evenly spaced in sigma^(1/rho) from sigma_max to sigma_min."""
        ramp = torch.linspace(0, 1, n)
        low, high = self.sigma_min ** (1 / KARRAS_RHO), self.sigma_max ** (1 / KARRAS_RHO)
        return _append_zero((high + ramp * (low - high)) ** KARRAS_RHO)

    def exponential(self, n: int) -> torch.Tensor:
        """Evenly spaced in log sigma from sigma_max to sigma_min."""
        log_sigmas = torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), n)
        return _append_zero(log_sigmas.exp())


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def a1111_sigmas(
    model: DiscreteSigmas, sampler: Sampler, schedule: str, steps: int
) -> torch.Tensor:
    """The `steps + 1` sigmas (ending in 0) A1111 samples `steps` steps with.

    `schedule` is an effective schedule (pipeline.samplers.effective_schedule), not Automatic.
    """
    n = steps + 1 if sampler.discard_penultimate else steps
    build = {
        UNIFORM: model.uniform,
        SGM_UNIFORM: model.sgm_uniform,
        KARRAS: model.karras,
        EXPONENTIAL: model.exponential,
    }[schedule]
    sigmas = build(n)
    if sampler.discard_penultimate:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def install_sigmas(
    scheduler: Any, model: DiscreteSigmas, sigmas: torch.Tensor, device: torch.device
) -> None:
    """Make a k-diffusion-style diffusers scheduler step through exactly `sigmas` (ending in 0).

    Most of them accept no explicit sigmas, but build their whole state (the interleaved sigmas
    of Heun and DPM2, the ancestral up/down sigmas) from what their exponential-sigma converter
    returns: so that converter is replaced, on this instance only, by one returning `sigmas`.
    Euler a has no such option; its state is only its sigmas and timesteps. Schedulers that
    keep integer timesteps (DPM++ 2M, UniPC) get k-diffusion's fractional ones back.
    """
    if hasattr(scheduler, "use_sigmas"):  # pipeline/k_samplers.py's own schedulers
        scheduler.use_sigmas(sigmas, model, device)
        return
    steps = len(sigmas) - 1
    if "use_exponential_sigmas" in scheduler.config:
        explicit = sigmas[:-1].double().numpy()
        scheduler._convert_to_exponential = lambda in_sigmas, num_inference_steps: explicit
        scheduler.set_timesteps(steps, device=device)
    else:
        scheduler.set_timesteps(steps, device=device)
        scheduler.sigmas = sigmas.float().cpu()
        scheduler.timesteps = model.sigma_to_t(sigmas[:-1]).to(device)
    if not scheduler.timesteps.is_floating_point():
        scheduler.timesteps = model.sigma_to_t(sigmas[:-1]).to(device)


def brownian_step_noise(
    scheduler: Any, schedule: torch.Tensor, latents: torch.Tensor, seeds: Sequence[int]
) -> Callable[[int], dict[str, torch.Tensor]]:
    """The SDE samplers' step noise as A1111 makes it: a Brownian tree per image, seeded with
    its seed and spanning the whole `schedule` even when the pass runs only its end (img2img,
    the hires pass). Returns step i's extra arguments to `scheduler.step`.

    DPM++ SDE's scheduler asks the tree itself, once handed it as its `noise_sampler`; DPM++ 2M
    SDE's takes each step's `variance_noise`, none for the last step, to sigma 0. The trees are
    float32, as A1111's, whatever the latents' dtype; their noise comes from torchsde, which
    `pipeline.noise.routed_noise` points at the request's RNG.
    """
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    template = torch.zeros(latents.shape, device=latents.device)
    # diffusers annotates the sigmas as float; it passes (and the tree takes) 0-d tensors.
    tree = BrownianTreeNoiseSampler(
        template,
        schedule[schedule > 0].min(),  # type: ignore[arg-type]
        schedule.max(),  # type: ignore[arg-type]
        list(seeds),
    )

    def between(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return tree(sigma, sigma_next).to(latents.dtype)  # type: ignore[arg-type]

    if hasattr(scheduler, "noise_sampler"):
        scheduler.noise_sampler = between
        return lambda step: {}
    sigmas = scheduler.sigmas

    def noise(step: int) -> dict[str, torch.Tensor]:
        if sigmas[step + 1] == 0:
            return {"variance_noise": torch.zeros_like(latents)}
        return {"variance_noise": between(sigmas[step], sigmas[step + 1])}

    return noise


def k_diffusion_options(scheduler_class: type[Any]) -> dict[str, Any]:
    """Config overrides so that a scheduler's own sigma options leave the installed sigmas be."""
    accepted = inspect.signature(scheduler_class.__init__).parameters
    overrides: dict[str, Any] = {"timestep_spacing": "linspace"}
    if "use_exponential_sigmas" in accepted:
        overrides |= {
            "use_exponential_sigmas": True,
            "use_karras_sigmas": False,
            "use_beta_sigmas": False,
        }
    if "final_sigmas_type" in accepted:
        overrides["final_sigmas_type"] = "zero"
    return overrides
