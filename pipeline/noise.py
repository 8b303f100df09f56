"""Where the noise numbers come from: A1111's three RNG sources, with a generator per image.

A1111 1.10 (modules/rng.py) draws each image's noise from a generator of its own, seeded with the
image's seed, from the source its `RNG` setting names:

- CPU: torch's CPU generator. The same numbers on every machine; Dreamcord's default.
- GPU: torch's generator on the CUDA device, A1111's default and what an infotext without an
  `RNG` field means. Where the engine has no CUDA device, the NV generator makes those numbers.
- NV: A1111's CPU imitation of torch's CUDA randn (modules/rng_philox.py), which its settings
  offer "to produce same picture as on NVidia videocards": Philox4x32-10 keyed with the seed,
  one counter per element (the draw number in its first word, the element's index in its third)
  and the first Box-Muller value of the counter's first two output words. Its docstring's
  expected output is torch's CUDA randn for seed 0; A1111's generator (which this one equals bit
  for bit, tests/pipeline/test_noise.py) is within 3e-7 of it, since CUDA does the Box-Muller
  step in float32 and A1111 in float64. So GPU noise off CUDA is NV noise.

The libraries draw noise too: diffusers' ancestral schedulers their step noise, torchsde the
Brownian trees of the SDE samplers. `routed_noise` makes them draw from these sources, as A1111
makes k-diffusion and torchsde draw from its own.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from pipeline.backend import ImageTask

_WORD = 0xFFFFFFFF
_PHILOX_MULTIPLIERS = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUNDS = 10
# curand's 2**-32 and 2**-32 * 2 pi, as float32 constants the way rng_philox writes them.
_TWO_POW32_INV = float(np.float32(2.3283064e-10))
_TWO_POW32_INV_2PI = float(np.float32(2.3283064e-10 * 6.2831855))


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """The Philox4x32-10 block function (Salmon et al. 2011) over many counters at once.

    `counter` is (4, n) uint32 words, `key` two 32-bit words; returns the (4, n) output words.
    """
    c0, c1, c2, c3 = (counter[i].astype(np.uint64) for i in range(4))
    k0, k1 = key
    for index in range(_PHILOX_ROUNDS):
        if index:
            k0, k1 = (k0 + _PHILOX_KEY_STEPS[0]) & _WORD, (k1 + _PHILOX_KEY_STEPS[1]) & _WORD
        product0, product1 = c0 * _PHILOX_MULTIPLIERS[0], c2 * _PHILOX_MULTIPLIERS[1]
        c0, c1, c2, c3 = (
            (product1 >> 32) ^ c1 ^ k0,
            product1 & _WORD,
            (product0 >> 32) ^ c3 ^ k1,
            product0 & _WORD,
        )
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def box_muller(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Standard normal float32 numbers from pairs of uint32 words: curand's transform, in
    float64 as A1111's rng_philox computes it, keeping only the sine value."""
    u = x * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class NoiseGenerator(Protocol):
    """One image's stream of noise: each call to `randn` continues where the last one ended."""

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The next `shape` standard normal float32 numbers."""
        ...


class TorchGenerator:
    """torch's own generator, on the CPU (RNG CPU) or on a CUDA device (RNG GPU)."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self._device = device
        self._generator = torch.Generator(device).manual_seed(seed)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self._generator, device=self._device)


class PhiloxGenerator:
    """RNG NV: torch's CUDA randn reproduced on the CPU, as A1111's rng_philox.Generator.

    The key is the seed's low and high 32 bits. Draw number d uses counters (d, 0, i, 0) for
    its elements i, so a later draw goes on with fresh numbers rather than repeating the first.
    """

    def __init__(self, seed: int) -> None:
        self._key = (seed & _WORD, (seed >> 32) & _WORD)
        self._draws = 0

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        count = math.prod(shape)
        counter = np.zeros((4, count), dtype=np.uint32)
        counter[0] = self._draws
        counter[2] = np.arange(count, dtype=np.uint32)
        self._draws += 1
        words = philox4x32_10(counter, self._key)
        return torch.from_numpy(box_muller(words[0], words[1]).reshape(shape))


@dataclass(frozen=True)
class NoiseSource:
    """An A1111 RNG setting (CPU, GPU or NV) on the device the engine samples on."""

    rng: str
    device: torch.device

    def generator(self, seed: int) -> NoiseGenerator:
        """A new generator seeded with `seed` (A1111's create_generator)."""
        if self.rng == "CPU":
            return TorchGenerator(seed, torch.device("cpu"))
        if self.rng == "GPU" and self.device.type == "cuda":
            return TorchGenerator(seed, self.device)
        return PhiloxGenerator(seed)

    def randn(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        """The first draw of a new generator (A1111's randn_local)."""
        return self.generator(seed).randn(shape)


class ImageNoise:
    """A batch's noise as A1111's ImageRNG makes it, so no image depends on its batch.

    Each image has its own generator. Its first draw is the image's initial noise, blended per
    column with its variation seed's first draw; every later draw is step noise. With an ENSD
    (eta noise seed delta) A1111 reseeds each generator with seed + ENSD after the first draw,
    so only the step noise changes.
    """

    def __init__(
        self,
        source: NoiseSource,
        tasks: Sequence[ImageTask],
        shape: tuple[int, int, int],
        ensd: int = 0,
    ) -> None:
        self.source = source
        self._tasks = tasks
        self._shape = shape
        self._ensd = ensd
        self._generators = [source.generator(task.seed) for task in tasks]

    def initial(self) -> torch.Tensor:
        """The (batch, 4, h, w) initial noise: each generator's first draw."""
        images = []
        for task, generator in zip(self._tasks, self._generators, strict=True):
            noise = generator.randn(self._shape)
            if task.variation_seed is not None:
                varied = self.source.randn(task.variation_seed, self._shape)
                noise = slerp(task.request.variation_strength, noise, varied)
            images.append(noise)
        if self._ensd:
            self._generators = [
                self.source.generator(task.seed + self._ensd) for task in self._tasks
            ]
        return torch.stack(images)

    def step(self) -> torch.Tensor:
        """The next (batch, 4, h, w) step noise, one draw from each image's generator."""
        return torch.stack([generator.randn(self._shape) for generator in self._generators])


def slerp(t: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation per column, as A1111 blends a variation seed's noise.

    A1111 normalises the (4, h, w) noise along its height axis, so each (channel, column) pair is
    interpolated on its own circle: a whole-tensor slerp gives a different blend. Nearly parallel
    columns fall back to a straight mix, as there.
    """
    low, high = start.reshape(-1, *start.shape[-2:]), end.reshape(-1, *end.shape[-2:])
    low_unit = low / low.norm(dim=1, keepdim=True)
    high_unit = high / high.norm(dim=1, keepdim=True)
    cos_angle = (low_unit * high_unit).sum(1)
    if cos_angle.mean() > 0.9995:
        return ((1 - t) * start + t * end).to(start.dtype)
    angle = torch.acos(cos_angle)
    sine = torch.sin(angle)
    blend = (torch.sin((1 - t) * angle) / sine).unsqueeze(1) * low + (
        torch.sin(t * angle) / sine
    ).unsqueeze(1) * high
    return blend.reshape(start.shape).to(start.dtype)


_ROUTING = threading.Lock()
"""`routed_noise` swaps module globals of diffusers and torchsde: one sampling loop at a time."""


@contextlib.contextmanager
def routed_noise(scheduler: Any, images: ImageNoise) -> Iterator[None]:
    """While the body runs, the scheduler's step noise is the images' next draw and every
    Brownian tree's noise comes from their source, as in A1111.

    diffusers' schedulers draw step noise through their module's `randn_tensor`, and torchsde
    each tree interval's noise through `_randn(size, dtype, device, seed)`. A1111 replaces their
    counterparts for good (k-diffusion's `torch.randn_like` becomes the ImageRNG's next draw,
    torchsde's `_randn` a fresh generator's first draw); here they are swapped for the loop only.
    """
    from torchsde._brownian import brownian_interval

    def step_noise(shape: Sequence[int], *_: Any, **options: Any) -> torch.Tensor:
        noise = images.step()
        assert noise.shape == tuple(shape), f"step noise {tuple(noise.shape)} for {shape}"
        return noise.to(options.get("device"), options.get("dtype"))

    def tree_noise(size: Sequence[int], dtype: Any, device: Any, seed: int) -> torch.Tensor:
        return images.source.randn(int(seed), tuple(size)).to(device, dtype)

    module = sys.modules[type(scheduler).__module__]
    with _ROUTING, contextlib.ExitStack() as stack:
        if hasattr(module, "randn_tensor"):
            stack.enter_context(_swapped(module, "randn_tensor", step_noise))
        stack.enter_context(_swapped(brownian_interval, "_randn", tree_noise))
        yield


@contextlib.contextmanager
def _swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)
