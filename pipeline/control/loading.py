"""ControlNet files loaded as diffusers `ControlNetModel`s shaped like the running model's UNet.

A file comes in one of two layouts: the original one of the ControlNet 1.0/1.1 releases (names
under `control_model.`), which diffusers' own `convert_controlnet_checkpoint` renames, or the
diffusers layout, taken as it is. The architecture is the UNet's encoder (`from_unet`), built
on the meta device and filled by assignment, so the weights are allocated once. Loaded models
rest on the CPU in the UNet's dtype; a batch moves the ones it uses to the device and back.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError
from pipeline.request import MAX_CONTROL_UNITS

if TYPE_CHECKING:
    import torch

ORIGINAL_PREFIX = "control_model."
"""The original layout's prefix, diffusers' `LDM_CONTROLNET_KEY`."""
DIFFUSERS_MARK = "time_embedding.linear_1.weight"
"""A key only the diffusers layout has: diffusers' converter returns such a file unchanged."""
CONTROL_IN_CHANNELS = 4
"""A ControlNet reads the noisy latents alone, even beside an inpainting UNet's 9 channels."""
WIDTH_KEYS = ("conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight")
"""The block width and the text width: where a file for another model first differs."""


def controlnet_config(unet: Any) -> dict[str, Any]:
    """The config of a ControlNet for `unet`: its encoder, reading 4 latent channels."""
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):
        shaped = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    return {**shaped.config, "in_channels": CONTROL_IN_CHANNELS}


def load_controlnet(path: Path, unet: Any) -> Any:
    """The ControlNet in `path` built for `unet`, in its dtype, on the CPU; a UserError when the
    file is unreadable or made for another model."""
    import torch
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint as _convert
    from safetensors.torch import load_file

    from pipeline.models import check_safetensors

    convert: Any = _convert  # untyped, as diffusers' models are (pipeline/models.py)
    model_class: Any = ControlNetModel
    check_safetensors(path)
    state: dict[str, Any] = load_file(str(path))
    config = controlnet_config(unet)
    if DIFFUSERS_MARK not in state:
        converted = convert(state, config)
        # The converter looks keys up with .get: a name the file lacks comes back as None.
        state = {key: tensor for key, tensor in converted.items() if tensor is not None}
    with torch.device("meta"):
        controlnet = model_class.from_config(config)
    _check_fits(path.name, controlnet.state_dict(), state)
    dtype = unet.dtype
    controlnet.load_state_dict(
        {key: tensor.to(dtype) for key, tensor in state.items()}, strict=True, assign=True
    )
    return controlnet.eval()


def _check_fits(name: str, expected: dict[str, Any], found: dict[str, Any]) -> None:
    """Refuse a file whose names or shapes are not exactly the model's ControlNet's."""
    for key in WIDTH_KEYS:
        if key in found and key in expected and found[key].shape != expected[key].shape:
            raise UserError(
                f"ControlNet {name} was made for another model width: its {key} is "
                f"{tuple(found[key].shape)}, this model needs {tuple(expected[key].shape)}; "
                "use a ControlNet made for this model's family (SD1.5)"
            )
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(
        key for key in expected.keys() & found.keys() if found[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong:
        parts = [
            f"{len(keys)} {what} (such as {keys[0]})"
            for keys, what in (
                (missing, "weights missing"),
                (unexpected, "unexpected weights"),
                (wrong, "weights of another shape"),
            )
            if keys
        ]
        raise UserError(
            f"ControlNet {name} does not fit this model: {', '.join(parts)}; it must be an "
            "SD1.5 ControlNet .safetensors file (the original ControlNet 1.1 layout or "
            "diffusers')"
        )


class ControlNetCache:
    """Loaded ControlNets, least recently used out first, at most `keep` of them.

    Keyed by the file's sha256 and the UNet's architecture and dtype, so a renamed file is
    still a hit and a model of another shape gets its own. `keep` defaults to the most units one
    request may use, so a batch never evicts a ControlNet it needs.
    """

    def __init__(self, keep: int = MAX_CONTROL_UNITS) -> None:
        self.keep = keep
        self._entries: OrderedDict[tuple[str, str], Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, path: Path, sha256: str, unet: Any) -> Any:
        """The ControlNet of `path` for `unet`, loading it on a miss."""
        key = (sha256, _architecture(unet))
        controlnet = self._entries.pop(key, None)
        if controlnet is None:
            if not path.is_file():
                raise UserError(
                    f"the file of ControlNet {path.name} is gone from the library: add it again"
                )
            controlnet = load_controlnet(path, unet)
        self._entries[key] = controlnet
        while len(self._entries) > self.keep:
            self._entries.popitem(last=False)
        return controlnet


def _architecture(unet: Any) -> str:
    """What a ControlNet's shape and dtype depend on: the UNet's config and dtype."""
    import json

    return json.dumps({**unet.config, "dtype": str(unet.dtype)}, sort_keys=True, default=str)


@contextlib.contextmanager
def placed(controlnets: Sequence[Any], device: torch.device) -> Iterator[None]:
    """The ControlNets on `device` for the body, back on the CPU after, so that between batches
    they hold no device memory the memory model does not count."""
    for controlnet in controlnets:
        controlnet.to(device)
    try:
        yield
    finally:
        for controlnet in controlnets:
            controlnet.to("cpu")
