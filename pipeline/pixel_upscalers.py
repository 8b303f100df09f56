"""ESRGAN-family pixel upscalers: our own RRDBNet, loaded from `.safetensors` files and run tiled.

The layout is recognised from the weight names and shapes: the BasicSR/Real-ESRGAN names
(`conv_first`, `body.N.rdb1.conv1`, ...) and the original ESRGAN names (`model.0`,
`model.1.sub.N.RDB1.conv1.0`, ...), at scale 4, or 2 and 1 through Real-ESRGAN's pixel-unshuffled
input. Anything else is refused with the reason, and pickles are never loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from pipeline.errors import UserError

RESIDUAL_SCALE = 0.2
TILE = 256
"""Input pixels per side of a tile's own area; a 4x model's tile then peaks near 1 GiB in fp32."""
TILE_PAD = 32
"""Input pixels each tile also sees on each side, cropped away, so tiles join without seams."""
UNSHUFFLE_BY_IN_CHANNELS = {3: 1, 12: 2, 48: 4}
"""Real-ESRGAN feeds x2 and x1 models a pixel-unshuffled image: 3 * factor**2 input channels."""
PICKLE_STARTS = (b"\x80", b"PK\x03\x04")
"""A PyTorch pickle (`.pth`): a bare pickle, or torch.save's zip archive."""


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier conv's output."""

    conv5: nn.Conv2d
    """Set with conv1-4 by `setattr` in `__init__`."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for index in range(5):
            out = features if index == 4 else growth
            conv = nn.Conv2d(features + index * growth, out, 3, padding=1)
            setattr(self, f"conv{index + 1}", conv)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        for index in range(1, 5):
            conv = getattr(self, f"conv{index}")
            outputs.append(self.lrelu(conv(torch.cat(outputs, 1))))
        return self.conv5(torch.cat(outputs, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks and a scaled skip around them."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, growth)
        self.rdb2 = ResidualDenseBlock(features, growth)
        self.rdb3 = ResidualDenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


@dataclass(frozen=True)
class NetShape:
    """What a state dict says about its network."""

    features: int
    blocks: int
    growth: int
    unshuffle: int = 1

    @property
    def scale(self) -> int:
        return 4 // self.unshuffle


class RRDBNet(nn.Module):
    """ESRGAN's generator, with BasicSR's module names: the body always upsamples 4x, and the
    x2/x1 models first pixel-unshuffle the image by 2/4."""

    def __init__(self, shape: NetShape) -> None:
        super().__init__()
        self.shape = shape
        features = shape.features
        self.conv_first = nn.Conv2d(3 * shape.unshuffle**2, features, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(features, shape.growth) for _ in range(shape.blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, padding=1)
        self.conv_up1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv_up2 = nn.Conv2d(features, features, 3, padding=1)
        self.conv_hr = nn.Conv2d(features, features, 3, padding=1)
        self.conv_last = nn.Conv2d(features, 3, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    @property
    def scale(self) -> int:
        return self.shape.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], with sides a multiple of the unshuffle factor, to `scale` times larger."""
        if self.shape.unshuffle > 1:
            x = functional.pixel_unshuffle(x, self.shape.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for conv in (self.conv_up1, self.conv_up2):
            upsampled = functional.interpolate(features, scale_factor=2, mode="nearest")
            features = self.lrelu(conv(upsampled))
        return self.conv_last(self.lrelu(self.conv_hr(features)))


_OLD_NAMES = [
    (re.compile(r"model\.0\.(weight|bias)"), r"conv_first.\1"),
    (
        re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)"),
        r"body.\1.rdb\2.conv\3.\4",
    ),
    (re.compile(r"model\.3\.(weight|bias)"), r"conv_up1.\1"),
    (re.compile(r"model\.6\.(weight|bias)"), r"conv_up2.\1"),
    (re.compile(r"model\.8\.(weight|bias)"), r"conv_hr.\1"),
    (re.compile(r"model\.10\.(weight|bias)"), r"conv_last.\1"),
]
"""The original ESRGAN's names for the same modules; its trunk conv follows the last block."""


def _from_old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    trunk = max(
        (int(m[1]) for key in state if (m := re.fullmatch(r"model\.1\.sub\.(\d+)\.weight", key))),
        default=None,
    )
    trunk_keys = {f"model.1.sub.{trunk}.{kind}" for kind in ("weight", "bias")}
    renamed = {}
    for key, tensor in state.items():
        new = "conv_body." + key.rsplit(".", 1)[1] if key in trunk_keys else None
        for pattern, replacement in _OLD_NAMES:
            if new is None and pattern.fullmatch(key):
                new = pattern.sub(replacement, key)
        if new is None:
            raise UserError(f"unexpected weight {key!r} for the original ESRGAN layout")
        renamed[new] = tensor
    return renamed


def _shape_of(state: dict[str, torch.Tensor]) -> NetShape:
    first = state.get("conv_first.weight")
    growth = state.get("body.0.rdb1.conv1.weight")
    if first is None or growth is None or first.ndim != 4 or growth.ndim != 4:
        raise UserError("no conv_first and first dense block weights")
    unshuffle = UNSHUFFLE_BY_IN_CHANNELS.get(first.shape[1])
    if unshuffle is None:
        raise UserError(f"{first.shape[1]} input channels: expected 3, 12 (x2) or 48 (x1)")
    blocks = 1 + max(int(m[1]) for key in state if (m := re.match(r"body\.(\d+)\.", key)))
    return NetShape(int(first.shape[0]), blocks, int(growth.shape[0]), unshuffle)


def _check_matches(state: dict[str, torch.Tensor], net: RRDBNet) -> None:
    expected = net.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unknown = sorted(state.keys() - expected.keys())
    if missing or unknown:
        detail = f"missing {missing[:3]}" if missing else f"unknown {unknown[:3]}"
        raise UserError(f"weights do not form an RRDBNet: {detail}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"{key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{key} holds non-finite or non-float values")


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    with path.open("rb") as file:
        start = file.read(4)
    if start.startswith(PICKLE_STARTS):
        raise UserError(
            "it is a PyTorch pickle (.pth) renamed to .safetensors; pickles are never loaded: "
            "convert it to safetensors, or use a .safetensors release"
        )
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"not a readable .safetensors file ({error})") from None


def load_rrdbnet(path: Path) -> RRDBNet:
    """The ESRGAN-family model in `path` (a `.safetensors` file), or a UserError saying why not."""
    try:
        state = _read_state(path)
        if any(key.startswith("model.") for key in state):
            state = _from_old_layout(state)
        net = RRDBNet(_shape_of(state))
        _check_matches(state, net)
    except UserError as error:
        raise UserError(f"upscaler {path.name} cannot be used: {error}") from None
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def upscale_image(
    net: RRDBNet, image: Image.Image, tile: int = TILE, pad: int = TILE_PAD
) -> Image.Image:
    """`image` made `net.scale` times larger, tile by tile so memory stays bounded.

    Each tile also sees `pad` pixels of its neighbours, cropped from the output, so the result
    matches one pass over the whole image as long as `pad` covers the network's reach.
    """
    parameter = next(net.parameters())
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    pixels = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    with torch.inference_mode():
        upscaled = _run_tiled(net, pixels, tile, pad, parameter.device, parameter.dtype)
    out = (upscaled[0].float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(out.permute(1, 2, 0).numpy(), "RGB")


def _run_tiled(
    net: RRDBNet,
    pixels: torch.Tensor,
    tile: int,
    pad: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    factor, scale = net.shape.unshuffle, net.scale
    height, width = pixels.shape[2:]
    # Pixel-unshuffled models need sides, tiles and pads that the factor divides.
    tile, pad = _multiple(tile, factor), _multiple(pad, factor)
    extra_h, extra_w = -height % factor, -width % factor
    if extra_h or extra_w:
        pixels = functional.pad(pixels, (0, extra_w, 0, extra_h), mode="replicate")
    padded_h, padded_w = pixels.shape[2:]
    result = torch.empty(1, 3, padded_h * scale, padded_w * scale)
    for top in range(0, padded_h, tile):
        for left in range(0, padded_w, tile):
            bottom, right = min(top + tile, padded_h), min(left + tile, padded_w)
            y0, x0 = max(top - pad, 0), max(left - pad, 0)
            y1, x1 = min(bottom + pad, padded_h), min(right + pad, padded_w)
            out = net(pixels[:, :, y0:y1, x0:x1].to(device, dtype)).float().cpu()
            crop = out[
                :,
                :,
                (top - y0) * scale : (bottom - y0) * scale,
                (left - x0) * scale : (right - x0) * scale,
            ]
            result[:, :, top * scale : bottom * scale, left * scale : right * scale] = crop
    return result[:, :, : height * scale, : width * scale]


def _multiple(value: int, factor: int) -> int:
    return max(factor, value // factor * factor)


class PixelModelCache:
    """The last used upscaler model, kept loaded: one at a time, reloaded when its file changes."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._net: RRDBNet | None = None

    def get(self, path: Path, device: torch.device, dtype: torch.dtype) -> RRDBNet:
        try:
            stat = path.stat()
        except OSError:
            raise UserError(f"upscaler {path.name} is no longer installed") from None
        key = (path, stat.st_mtime_ns, stat.st_size, device, dtype)
        if self._key != key or self._net is None:
            self._net = None  # free the old model before loading the next
            self._net = load_rrdbnet(path).to(device, dtype)
            self._key = key
        return self._net
