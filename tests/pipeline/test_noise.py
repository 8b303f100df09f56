"""Noise as A1111 makes it: its CPU, GPU and NV sources, per-image streams, ENSD, variations.

Expected numbers come from outside this code: torch's own generators, Random123's published
Philox known-answer vectors, and numbers printed by A1111 itself (its rng_philox docstring,
and its rng_philox.Generator run as shipped). numpy.random.Philox cannot serve: it is Philox4x64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from pipeline.backend import ImageTask
from pipeline.noise import ImageNoise, NoiseSource, PhiloxGenerator, philox4x32_10, routed_noise
from pipeline.request import GenerationRequest, Mode
from tests.pipeline.a1111_reference import a1111_slerp

CPU = torch.device("cpu")
Draws = Callable[[int, int], list[torch.Tensor]]
"""A seed's first n draws from one reference generator."""
SHAPE = (4, 8, 12)

RANDOM123_PHILOX4X32_10 = [
    # Random123 1.14, tests/kat_vectors, the "philox4x32 10" rows: counter[4] key[2] -> out[4].
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

CUDA_RANDN_SEED_0 = [
    # A1111 1.10 modules/rng_philox.py, its docstring's "Expected output" of
    # Generator(seed=0).randn(shape=(3, 4)): torch.randn(3, 4, device="cuda") after seed 0.
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]

A1111_NV_DRAWS = [
    # Printed by A1111 1.10.1's modules/rng_philox.py: Generator(seed).randn(shape), draw by
    # draw (float32, shortest repr). Seeds above 2**32 reach the key's second word.
    (0, (3, 4), 0, [-0.9246624, -0.42534396, -2.6438458, 0.14518388, -0.12086651, -0.5797257]),
    (0, (3, 4), 1, [0.18082589, -0.5522627, 0.9238134, -0.73497033, 1.3799946, 0.8676307]),
    (2**40 + 7, (2, 3), 0, [-0.4790498, -1.2782506, -0.24156637, -0.38499948, 0.2795231]),
    (4294967295, (2, 3), 1, [-0.87534004, 0.45050296, -0.11009463, -0.2534299, 1.2835984]),
]


def tasks_of(request: GenerationRequest) -> list[ImageTask]:
    return [ImageTask("job", index, request) for index in range(request.count)]


def nv_draws(seed: int, count: int) -> list[torch.Tensor]:
    generator = PhiloxGenerator(seed)
    return [generator.randn(SHAPE) for _ in range(count)]


def cpu_draws(seed: int, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=generator) for _ in range(count)]


@pytest.mark.parametrize(("counter", "key", "expected"), RANDOM123_PHILOX4X32_10)
def test_philox_rounds_give_random123s_known_answers(
    counter: tuple[int, ...], key: tuple[int, int], expected: tuple[int, ...]
) -> None:
    words = philox4x32_10(np.array(counter, dtype=np.uint32).reshape(4, 1), key)
    assert tuple(int(word) for word in words[:, 0]) == expected


def test_nv_noise_is_torchs_cuda_randn_within_float32_rounding() -> None:
    # CUDA runs the Box-Muller step in float32, A1111's NV in float64: 2.6e-7 apart here.
    noise = PhiloxGenerator(0).randn((3, 4))
    torch.testing.assert_close(noise, torch.tensor(CUDA_RANDN_SEED_0), rtol=0, atol=3e-7)


@pytest.mark.parametrize(("seed", "shape", "draw", "expected"), A1111_NV_DRAWS)
def test_nv_draws_equal_a1111s_rng_philox_bit_for_bit(
    seed: int, shape: tuple[int, ...], draw: int, expected: list[float]
) -> None:
    generator = PhiloxGenerator(seed)
    for _ in range(draw):
        generator.randn(shape)
    noise = generator.randn(shape).flatten()[: len(expected)]
    assert noise.dtype == torch.float32
    assert torch.equal(noise, torch.tensor(expected, dtype=torch.float32))


def test_gpu_noise_without_cuda_is_nv_noise() -> None:
    gpu, nv = NoiseSource("GPU", CPU), NoiseSource("NV", CPU)
    assert torch.equal(gpu.randn(7, SHAPE), nv.randn(7, SHAPE))
    assert not torch.equal(gpu.randn(7, SHAPE), NoiseSource("CPU", CPU).randn(7, SHAPE))


@pytest.mark.parametrize(("rng", "draws"), [("CPU", cpu_draws), ("NV", nv_draws)])
def test_each_image_draws_its_initial_then_its_step_noise_from_its_own_seed(
    rng: str, draws: Draws
) -> None:
    request = GenerationRequest("a fox", seed=42, count=2)
    images = ImageNoise(NoiseSource(rng, CPU), tasks_of(request), SHAPE)
    initial, first_step, second_step = images.initial(), images.step(), images.step()
    for index, seed in enumerate((42, 43)):
        expected = draws(seed, 3)
        assert torch.equal(initial[index], expected[0])
        assert torch.equal(first_step[index], expected[1])
        assert torch.equal(second_step[index], expected[2])


@pytest.mark.parametrize(("rng", "draws"), [("CPU", cpu_draws), ("NV", nv_draws)])
def test_ensd_reseeds_only_the_step_noise_with_seed_plus_ensd(rng: str, draws: Draws) -> None:
    request = GenerationRequest("a fox", seed=42, ensd=31337)
    images = ImageNoise(NoiseSource(rng, CPU), tasks_of(request), SHAPE, request.ensd)
    initial, first_step, second_step = images.initial(), images.step(), images.step()
    reseeded = draws(42 + 31337, 2)
    assert torch.equal(initial[0], draws(42, 1)[0])
    assert torch.equal(first_step[0], reseeded[0])
    assert torch.equal(second_step[0], reseeded[1])


@pytest.mark.parametrize(("rng", "draws"), [("CPU", cpu_draws), ("NV", nv_draws)])
@pytest.mark.parametrize("strength", [0.05, 0.3, 0.9])
def test_variation_noise_is_a1111s_per_column_slerp_of_two_first_draws(
    rng: str, draws: Draws, strength: float
) -> None:
    request = GenerationRequest(
        "a fox", seed=42, mode=Mode.VARIATION, variation_seed=7, variation_strength=strength
    )
    images = ImageNoise(NoiseSource(rng, CPU), tasks_of(request), SHAPE)
    expected = a1111_slerp(strength, draws(42, 1)[0], draws(7, 1)[0])
    torch.testing.assert_close(images.initial()[0], expected, atol=1e-6, rtol=1e-5)
    # The seed's own generator goes on with its second draw, the variation seed's is done.
    assert torch.equal(images.step()[0], draws(42, 2)[1])


def test_library_noise_functions_are_put_back_after_the_loop() -> None:
    from diffusers import EulerAncestralDiscreteScheduler
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as euler_a
    from torchsde._brownian import brownian_interval

    before = euler_a.randn_tensor, brownian_interval._randn
    images = ImageNoise(NoiseSource("NV", CPU), tasks_of(GenerationRequest("a fox")), SHAPE)
    images.initial()
    with (
        pytest.raises(RuntimeError),
        routed_noise(EulerAncestralDiscreteScheduler(), images),
    ):
        assert torch.equal(euler_a.randn_tensor((1, *SHAPE))[0], nv_draws(0, 2)[1])
        raise RuntimeError("a failed step")
    assert (euler_a.randn_tensor, brownian_interval._randn) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_noise_on_cuda_is_torchs_cuda_generator_and_nv_within_float32_rounding() -> None:
    cuda = torch.device("cuda")
    generator = NoiseSource("GPU", cuda).generator(42)
    first, second = generator.randn(SHAPE), generator.randn(SHAPE)
    reference = torch.Generator(cuda).manual_seed(42)
    assert torch.equal(first, torch.randn(SHAPE, generator=reference, device=cuda))
    assert torch.equal(second, torch.randn(SHAPE, generator=reference, device=cuda))
    nv = nv_draws(42, 2)
    torch.testing.assert_close(first.cpu(), nv[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(second.cpu(), nv[1], rtol=0, atol=1e-6)
