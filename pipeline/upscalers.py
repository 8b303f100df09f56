"""Highres-fix upscalers by their A1111 names: in latent space, or through pixels.

Besides the built-ins, every ESRGAN-family `.safetensors` model an admin installs in the upscaler
folder is offered under its file name (`4x-UltraSharp.safetensors` is `4x-UltraSharp`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pipeline.errors import UserError

MODEL_DENOISE = 0.35
"""Pixel upscalers keep detail, so the hires pass needs less denoise than after a latent one."""


@dataclass(frozen=True)
class Upscaler:
    """`latent_mode` interpolates latents (torch mode name, antialiased when `antialias`, as
    A1111's latent upscale modes); otherwise pixels are resampled, after going through the
    ESRGAN-family model in `model_file` when there is one."""

    name: str
    latent_mode: str | None = None
    antialias: bool = False
    resample: Image.Resampling = Image.Resampling.LANCZOS
    default_denoise: float = 0.5
    model_file: Path | None = None


UPSCALERS: dict[str, Upscaler] = {
    u.name.lower(): u
    for u in (
        Upscaler("Latent", "bilinear", default_denoise=0.55),
        Upscaler("Latent (antialiased)", "bilinear", antialias=True, default_denoise=0.55),
        Upscaler("Latent (bicubic)", "bicubic", default_denoise=0.55),
        Upscaler("Latent (bicubic antialiased)", "bicubic", antialias=True, default_denoise=0.55),
        Upscaler("Latent (nearest)", "nearest", default_denoise=0.6),
        Upscaler("Latent (nearest-exact)", "nearest-exact", default_denoise=0.6),
        Upscaler("Lanczos", default_denoise=MODEL_DENOISE),
    )
}
UPSCALER_NAMES = tuple(u.name for u in UPSCALERS.values())


@dataclass(frozen=True)
class UpscalerCatalog:
    """The built-in upscalers and the models installed in `folder` (None: built-ins only).

    The folder is read on every lookup, so a model an admin adds or removes counts at once.
    A built-in name wins over a file of the same name.
    """

    folder: Path | None = None

    def find(self, name: str) -> Upscaler:
        key = name.strip().lower()
        upscaler = UPSCALERS.get(key) or self._installed().get(key)
        if upscaler is None:
            raise UserError(f"unknown upscaler {name!r}: use one of {', '.join(self.names())}")
        return upscaler

    def names(self) -> tuple[str, ...]:
        return UPSCALER_NAMES + tuple(u.name for u in self.models())

    def models(self) -> list[Upscaler]:
        """The installed models, sorted by name."""
        return sorted(self._installed().values(), key=lambda u: u.name.lower())

    def upscale_model(self) -> Upscaler | None:
        """The model the upscale button uses: the first installed one by name, if any."""
        models = self.models()
        return models[0] if models else None

    def _installed(self) -> dict[str, Upscaler]:
        if self.folder is None or not self.folder.is_dir():
            return {}
        found = {}
        for path in sorted(self.folder.iterdir()):
            key = path.stem.lower()
            if path.suffix.lower() == ".safetensors" and path.is_file() and key not in UPSCALERS:
                found[key] = Upscaler(path.stem, default_denoise=MODEL_DENOISE, model_file=path)
        return found


def find_upscaler(name: str, catalog: UpscalerCatalog | None = None) -> Upscaler:
    """The upscaler called `name` (any case): a built-in, or a model installed in `catalog`."""
    return (catalog or UpscalerCatalog()).find(name)
