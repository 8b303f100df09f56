"""Highres-fix upscalers by their A1111 names: in latent space, or through pixels."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from pipeline.errors import UserError


@dataclass(frozen=True)
class Upscaler:
    """`latent_mode` interpolates latents (torch mode name); otherwise pixels are resampled."""

    name: str
    latent_mode: str | None = None
    resample: Image.Resampling = Image.Resampling.LANCZOS
    default_denoise: float = 0.5


UPSCALERS: dict[str, Upscaler] = {
    u.name.lower(): u
    for u in (
        Upscaler("Latent", "bilinear", default_denoise=0.55),
        Upscaler("Latent (bicubic)", "bicubic", default_denoise=0.55),
        Upscaler("Latent (nearest)", "nearest", default_denoise=0.6),
        Upscaler("Lanczos", default_denoise=0.35),
    )
}
UPSCALER_NAMES = tuple(u.name for u in UPSCALERS.values())


def find_upscaler(name: str) -> Upscaler:
    upscaler = UPSCALERS.get(name.strip().lower())
    if upscaler is None:
        raise UserError(f"unknown upscaler {name!r}: use one of {', '.join(UPSCALER_NAMES)}")
    return upscaler
