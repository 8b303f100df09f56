"""Initial noise as A1111 makes it with `RNG: CPU`, variation seeds included."""

from __future__ import annotations

import pytest
import torch

from pipeline.backend import ImageTask
from pipeline.engine import prepare_noise
from pipeline.request import GenerationRequest, Mode


def a1111_variation_noise(seed: int, variation_seed: int, strength: float) -> torch.Tensor:
    """A1111's recipe, written from its documented behaviour: (4, h, w) noise from a CPU
    generator per seed, blended by a slerp whose norms run along the height axis."""
    shape = (4, 8, 12)
    low = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    high = torch.randn(shape, generator=torch.Generator().manual_seed(variation_seed))
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    omega = torch.acos((low_norm * high_norm).sum(1))
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low + (
        torch.sin(strength * omega) / so
    ).unsqueeze(1) * high


@pytest.mark.parametrize("strength", [0.05, 0.3, 0.9])
def test_variation_noise_equals_a1111_per_column_slerp(strength: float) -> None:
    request = GenerationRequest(
        "a fox", width=96, height=64, seed=42, mode=Mode.VARIATION,
        variation_seed=7, variation_strength=strength,
    )  # fmt: skip
    task = ImageTask("job", 0, request)
    noise = prepare_noise([task], 96, 64, [torch.Generator().manual_seed(task.seed)])
    expected = a1111_variation_noise(42, 7, strength)
    torch.testing.assert_close(noise[0], expected, atol=1e-6, rtol=1e-5)


def test_plain_noise_is_the_cpu_generator_of_the_seed() -> None:
    request = GenerationRequest("a fox", width=96, height=64, seed=42)
    task = ImageTask("job", 1, request)
    noise = prepare_noise([task], 96, 64, [torch.Generator().manual_seed(task.seed)])
    expected = torch.randn((4, 8, 12), generator=torch.Generator().manual_seed(43))
    assert task.seed == 43 and torch.equal(noise[0], expected)
