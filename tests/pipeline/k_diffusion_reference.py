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
