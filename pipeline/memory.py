"""The memory model: how many images of a size fit in one batch on this device.

A batch's peak is modelled as a line in the batch size:

    peak = fixed + batch * pixels * image_bytes_per_pixel + pixels * decode_bytes_per_pixel

`fixed` is the model weights, the per-image term is the UNet's latents and activations (CFG
included), and the decode term is counted once because the engine decodes image by image.
`pixels` is the largest size the batch is sampled at (the hires pass when there is one).

The defaults come from the published SD1.5 fp16 figures (shared/sd15.md): 2.1 GB of weights,
3.1 GB at 512x512 batch 1 and 4.4 GB at batch 4 (slope 0.43 GB per image, which still holds a
whole-batch decode, so it overestimates), and about 1 GiB of VAE decode per 512x512 image. Those
figures do not fit one line exactly: the defaults predict 3.6 GB at batch 1, erring on the safe
side until `Capacity.calibrate` fits the per-image term from real peaks on the device.

ControlNet units add to both terms. Each distinct ControlNet model adds its weights to `fixed`
(an SD1.5 ControlNet is the UNet's encoder and middle block plus the hint encoder and zero
convolutions: 361M parameters, 0.72 GB in fp16). Each unit adds a share of the per-image term:
its residuals (one tensor per skip connection of the UNet, held through the UNet's call), its
map and the hint encoder's activations. The share was measured on the CPU with the sd15-random
architecture (`python -m bench controlnet --activations` counts the live bytes of every tensor
torch makes in one UNet call, with and without a unit): 27.6% at 128x128, 256x256 and 512x512
alike, since everything in both networks scales with the pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pipeline.request import ControlUnit, GenerationRequest, HiresSpec

REFERENCE_PIXELS = 512 * 512
GIB = 2**30

SD15_WEIGHTS_BYTES = 2.1e9
SD15_IMAGE_BYTES_512 = (4.4e9 - 3.1e9) / 3
SD15_DECODE_BYTES_512 = 1.0 * GIB
CONTROLNET_WEIGHTS_BYTES = 361e6 * 2
CONTROLNET_IMAGE_SHARE = 0.28
"""Per unit, of the per-image term: the measured 27.6%, rounded up."""
IMAGE_PROMPT_BYTES = 2 * (22.3e6 + 632e6)
"""ip-adapter_sd15 (22.3M parameters: the projection and 16 key/value pairs) and its ViT-H/14
image encoder (632M), in fp16: about 1.3 GB while a batch with image prompts runs. The image
tokens themselves add 4 context tokens per slot to the 77 of the text in each cross-attention
layer: a few MB per image at 512x512, inside the per-image term's margin."""


@dataclass(frozen=True)
class ControlLoad:
    """What a request's ControlNet units cost: the models loaded and the units run."""

    models: int = 0
    units: int = 0

    @classmethod
    def of(cls, controls: Sequence[ControlUnit]) -> ControlLoad:
        """Units of weight 0 are neither loaded nor run; a model used twice is loaded once."""
        used = [unit for unit in controls if unit.weight > 0]
        return cls(len({unit.model for unit in used}), len(used))


def sampled_pixels(width: int, height: int, hires: HiresSpec | None) -> int:
    """Pixels of the largest pass: the hires pass, when there is one, is the memory peak."""
    if hires is None:
        return width * height
    return max(width * height, round(width * hires.scale) * round(height * hires.scale))


@dataclass(frozen=True)
class MemoryModel:
    """The linear peak-memory model of one batch (see the module docstring)."""

    fixed_bytes: float = SD15_WEIGHTS_BYTES
    image_bytes_per_pixel: float = SD15_IMAGE_BYTES_512 / REFERENCE_PIXELS
    decode_bytes_per_pixel: float = SD15_DECODE_BYTES_512 / REFERENCE_PIXELS
    control_weights_bytes: float = CONTROLNET_WEIGHTS_BYTES
    control_image_share: float = CONTROLNET_IMAGE_SHARE
    image_prompt_bytes: float = IMAGE_PROMPT_BYTES
    """The adapter and image encoder, in the fixed term of a batch with image prompts."""

    def guide_bytes(self, request: GenerationRequest) -> float:
        """What a request's guides (image prompts) add to the fixed term."""
        return self.image_prompt_bytes if request.image_prompts else 0.0

    def batch_bytes(
        self,
        width: int,
        height: int,
        batch_size: int,
        hires: HiresSpec | None = None,
        control: ControlLoad = ControlLoad(),
    ) -> int:
        """Predicted peak bytes of a batch of `batch_size` images."""
        pixels = sampled_pixels(width, height, hires)
        per_batch = batch_size * pixels * self._image_bytes_per_pixel(control)
        decode = pixels * self.decode_bytes_per_pixel
        return math.ceil(self._fixed(control) + per_batch + decode)

    def max_batch(
        self,
        width: int,
        height: int,
        hires: HiresSpec | None,
        budget_bytes: int,
        control: ControlLoad = ControlLoad(),
    ) -> int:
        """The largest batch predicted to fit in `budget_bytes`, and at least 1.

        Never 0: the model is an estimate, so whether one image fits is settled by trying it
        (an `OutOfDeviceMemory` then fails that job with a clear message).
        """
        pixels = sampled_pixels(width, height, hires)
        room = budget_bytes - self._fixed(control) - pixels * self.decode_bytes_per_pixel
        return max(1, math.floor(room / (pixels * self._image_bytes_per_pixel(control))))

    def _fixed(self, control: ControlLoad) -> float:
        return self.fixed_bytes + control.models * self.control_weights_bytes

    def _image_bytes_per_pixel(self, control: ControlLoad) -> float:
        return self.image_bytes_per_pixel * (1 + control.units * self.control_image_share)

    def fitted(self, width: int, height: int, peaks: Sequence[tuple[int, int]]) -> MemoryModel:
        """This model with the per-image term (and the offset) fitted to measured peaks.

        `peaks` holds (batch size, peak bytes) at `width`x`height`, two or more distinct sizes.
        One size cannot separate the weights from the decode term, so the decode term is kept
        and the offset absorbs the difference.
        """
        sizes = {size for size, _ in peaks}
        if len(sizes) < 2:
            raise ValueError("calibration needs peaks at two or more batch sizes")
        mean_n = sum(n for n, _ in peaks) / len(peaks)
        mean_b = sum(b for _, b in peaks) / len(peaks)
        covariance = sum((n - mean_n) * (b - mean_b) for n, b in peaks)
        variance = sum((n - mean_n) ** 2 for n, _ in peaks)
        per_image = max(covariance / variance, 1.0)
        pixels = width * height
        offset = mean_b - per_image * mean_n
        return replace(
            self,
            fixed_bytes=max(0.0, offset - pixels * self.decode_bytes_per_pixel),
            image_bytes_per_pixel=per_image / pixels,
        )


def fixed_budget(limit_bytes: int) -> Callable[[], int]:
    """A budget that is a configured limit (CPU, or a GPU shared with other programs)."""
    return lambda: limit_bytes


def cuda_budget(reserve_bytes: int, device: int | None = None) -> Callable[[], int]:
    """A budget of what this process can use on a CUDA device, less `reserve_bytes`.

    Memory the allocator already holds (weights, cache) counts as usable, since the model's
    fixed term includes it; only what other processes hold is out of reach.
    """

    def budget() -> int:
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - reserve_bytes

    return budget


class Capacity:
    """What fits now: the memory model, today's budget, and what out-of-memory errors taught.

    After an out-of-memory at batch size n, batches are held to half of n (rounded up) at that
    pixel load, until the next calibration; an estimate that failed once is not tried again.
    """

    def __init__(self, model: MemoryModel, budget: Callable[[], int]) -> None:
        self.model = model
        self._budget = budget
        self._load_ceiling: float = math.inf
        self.reserved_bytes = 0
        """Held by background work (a training run's copies and optimizer state) between its
        steps: batches are sized in what is left. The worker sets it."""

    def max_batch(self, request: GenerationRequest) -> int:
        """How many images of `request`'s size one batch may hold now (at least 1)."""
        control = ControlLoad.of(request.controls)
        budget = round(self._budget() - self.reserved_bytes - self.model.guide_bytes(request))
        modelled = self.model.max_batch(
            request.width, request.height, request.hires, budget, control
        )
        if math.isinf(self._load_ceiling):
            return modelled
        return max(1, min(modelled, math.floor(self._load_ceiling / self._load(request))))

    def record_out_of_memory(self, request: GenerationRequest, batch_size: int) -> None:
        """Lower the capacity after a batch of `batch_size` images of `request` ran out."""
        halved = math.ceil(batch_size / 2) * self._load(request)
        self._load_ceiling = min(self._load_ceiling, halved)

    def _load(self, request: GenerationRequest) -> float:
        """One image's share of a batch's memory, in pixels: ControlNet units weigh more."""
        pixels = sampled_pixels(request.width, request.height, request.hires)
        units = ControlLoad.of(request.controls).units
        return pixels * (1 + units * self.model.control_image_share)

    def calibrate(
        self,
        measure: Callable[[int], int],
        width: int = 512,
        height: int = 512,
        sizes: Sequence[int] = (1, 2),
    ) -> MemoryModel:
        """Fit the model to `measure(batch_size)` -> real peak bytes at `width`x`height`.

        Run it on the worker thread (it runs the model); it forgets the out-of-memory ceiling,
        since the fitted model replaces the estimate that failed.
        """
        peaks = [(size, measure(size)) for size in sizes]
        self.model = self.model.fitted(width, height, peaks)
        self._load_ceiling = math.inf
        return self.model
