"""k-diffusion (the library A1111 samples with) set up as A1111 uses it, as a test reference.

Only `k_diffusion.sampling` and `k_diffusion.external` are needed. The package's `__init__`
also imports its training side (kornia, clean-fid, wandb, torchvision), so the two modules are
loaded from the installed package without it; their one other import, `k_diffusion.utils`,
imports torchvision at the top for image helpers these modules never call, so a placeholder
stands in for torchvision while it loads, and is taken away again.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
import types
from collections.abc import Callable, Sequence

import torch

SD15_BETA_START = 0.00085
SD15_BETA_END = 0.012
SD15_TRAIN_STEPS = 1000


def load_k_diffusion() -> tuple[types.ModuleType, types.ModuleType]:
    """The real `k_diffusion.sampling` and `k_diffusion.external` modules."""
    if "k_diffusion" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        assert spec is not None and spec.submodule_search_locations is not None
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["k_diffusion"] = package
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    placeholders = {name: types.ModuleType(name) for name in names}
    placeholders["torchvision.transforms"].functional = placeholders[names[2]]  # type: ignore[attr-defined]
    added = [name for name in names if name not in sys.modules]
    sys.modules.update({name: placeholders[name] for name in added})
    try:
        sampling = importlib.import_module("k_diffusion.sampling")
        external = importlib.import_module("k_diffusion.external")
    finally:
        for name in added:
            del sys.modules[name]
    return sampling, external


def sd15_alphas_cumprod() -> torch.Tensor:
    """SD1.5's training noise levels as the original LDM code makes them (float64, then float32)."""
    betas = (
        torch.linspace(
            SD15_BETA_START**0.5, SD15_BETA_END**0.5, SD15_TRAIN_STEPS, dtype=torch.float64
        )
        ** 2
    )
    return torch.cumprod(1 - betas, dim=0).float()


class LatentDiffusionStandIn(torch.nn.Module):
    """What k-diffusion's CompVisDenoiser wraps: `alphas_cumprod` and `apply_model(x, t, cond)`."""

    def __init__(self, unet: Callable[..., object] | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("alphas_cumprod", sd15_alphas_cumprod())

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        assert self.unet is not None
        return self.unet(x, t, encoder_hidden_states=cond).sample  # type: ignore[attr-defined]


def sd15_denoiser(unet: Callable[..., object] | None = None) -> torch.nn.Module:
    """k-diffusion's CompVisDenoiser for SD1.5, unquantized (A1111's default)."""
    _, external = load_k_diffusion()
    return external.CompVisDenoiser(LatentDiffusionStandIn(unet), quantize=False)


def cfg_denoiser(
    denoiser: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor, scale: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance on the denoised latents, as A1111's CFGDenoiser combines them."""

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        denoised = denoiser(
            torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([cond, uncond])
        )
        on_cond, on_uncond = denoised.chunk(2)
        return on_uncond + (on_cond - on_uncond) * scale

    return model


LCM_ORIGINAL_STEPS = 50


def sd15_lcm_denoiser(unet: Callable[..., object] | None = None) -> torch.nn.Module:
    """A1111's LCM denoiser (sd_samplers_lcm.py) on k-diffusion's eps denoiser, for SD1.5.

    The model is seen at the 50 timesteps LCM is distilled on (19, 39, ..., 999): sigmas from
    those alphas, the UNet called at the nearest of them, and the output through LCM's
    boundary condition (sigma data 0.5, timestep x 10).
    """
    _, external = load_k_diffusion()
    stand_in = LatentDiffusionStandIn(unet)
    skip = SD15_TRAIN_STEPS // LCM_ORIGINAL_STEPS

    class LcmDenoiser(external.DiscreteEpsDDPMDenoiser):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            valid = stand_in.alphas_cumprod[skip - 1 :: skip]
            super().__init__(stand_in, valid, quantize=None)

        def get_sigmas(self, n: int) -> torch.Tensor:
            start = self.sigma_to_t(self.sigma_max)
            end = self.sigma_to_t(self.sigma_min)
            sampling, _ = load_k_diffusion()
            return sampling.append_zero(self.t_to_sigma(torch.linspace(start, end, n)))

        def sigma_to_t(self, sigma: torch.Tensor, quantize: object = None) -> torch.Tensor:
            dists = sigma.log() - self.log_sigmas[:, None]
            return dists.abs().argmin(dim=0).view(sigma.shape) * skip + (skip - 1)

        def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
            index = torch.clamp(((t - (skip - 1)) / skip).float(), 0, len(self.sigmas) - 1)
            return super().t_to_sigma(index)

        def get_eps(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return stand_in.apply_model(x, t, cond)

        def forward(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: object) -> torch.Tensor:
            denoised = super().forward(x, sigma, **kwargs)
            scaled = self.sigma_to_t(sigma).view(-1, 1, 1, 1) * 10.0
            c_skip = 0.25 / (scaled**2 + 0.25)
            c_out = scaled / (scaled**2 + 0.25) ** 0.5
            return c_out * denoised + c_skip * x

    return LcmDenoiser()


def sample_lcm(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    noise_sampler: Callable[..., torch.Tensor] | None = None,
    **_: object,
) -> torch.Tensor:
    """A1111's LCM sampler: jump to the denoised latents, then noise them to the next sigma.

    Its noise is k-diffusion's default (`torch.randn_like` in k_diffusion.sampling), which
    A1111 answers with the image's generator.
    """
    sampling, _ = load_k_diffusion()
    noise_sampler = noise_sampler or sampling.default_noise_sampler(x)
    for sigma, sigma_next in itertools.pairwise(sigmas):
        x = model(x, sigma * x.new_ones([x.shape[0]]))
        if sigma_next > 0:
            x = x + sigma_next * noise_sampler(sigma, sigma_next)
    return x


Parts = Sequence[tuple[float, torch.Tensor]]


def scheduled_cfg_denoiser(
    denoiser: torch.nn.Module,
    conds_at: Callable[[int], tuple[Parts, torch.Tensor]],
    scale: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A1111's CFGDenoiser for one image whose conditioning changes from call to call.

    At its n-th call (from 0) `conds_at(n)` gives the (weight, cond) parts of the prompt and the
    uncond; the result is uncond + (part - uncond) x weight x scale for each part, added in
    order, as `combine_denoised` adds them.
    """
    calls = 0

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        parts, uncond = conds_at(calls)
        calls += 1
        on_uncond = denoiser(x, sigma, cond=uncond)
        denoised = on_uncond.clone()
        for weight, cond in parts:
            denoised += (denoiser(x, sigma, cond=cond) - on_uncond) * (weight * scale)
        return denoised

    return model
