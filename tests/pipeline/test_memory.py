import pytest

from pipeline.memory import GIB, Capacity, MemoryModel, fixed_budget, sampled_pixels
from pipeline.request import GenerationRequest, HiresSpec


def test_default_model_is_near_the_published_sd15_peaks_and_errs_high() -> None:
    model = MemoryModel()
    one = model.batch_bytes(512, 512, 1)
    four = model.batch_bytes(512, 512, 4)
    assert 3.1e9 <= one <= 3.7e9
    assert four - one == pytest.approx(4.4e9 - 3.1e9, rel=0.01)


def test_decode_is_counted_once_because_images_decode_one_by_one() -> None:
    model = MemoryModel(fixed_bytes=0, image_bytes_per_pixel=0, decode_bytes_per_pixel=1)
    assert model.batch_bytes(64, 64, 1) == model.batch_bytes(64, 64, 8) == 64 * 64


def test_hires_is_sized_at_the_hires_pass() -> None:
    assert sampled_pixels(512, 512, HiresSpec(scale=2.0)) == 1024 * 1024
    model = MemoryModel()
    assert model.batch_bytes(512, 512, 1, HiresSpec(scale=2.0)) == model.batch_bytes(1024, 1024, 1)


def test_max_batch_is_the_largest_batch_within_the_budget() -> None:
    model = MemoryModel()
    budget = 8 * GIB
    n = model.max_batch(512, 512, None, budget)
    assert model.batch_bytes(512, 512, n) <= budget < model.batch_bytes(512, 512, n + 1)
    assert model.max_batch(768, 768, None, budget) < n
    assert model.max_batch(512, 512, HiresSpec(scale=2.0), budget) < n


def test_max_batch_is_never_zero_so_one_image_is_always_tried() -> None:
    assert MemoryModel().max_batch(2048, 2048, None, 1 * GIB) == 1


def test_fitted_recovers_the_per_image_term_of_measured_peaks() -> None:
    truth = MemoryModel(fixed_bytes=2e9, image_bytes_per_pixel=1000, decode_bytes_per_pixel=500)
    peaks = [(n, truth.batch_bytes(512, 512, n)) for n in (1, 2, 4)]
    fitted = MemoryModel(decode_bytes_per_pixel=500).fitted(512, 512, peaks)
    assert fitted.image_bytes_per_pixel == pytest.approx(1000, rel=1e-6)
    assert fitted.fixed_bytes == pytest.approx(2e9, rel=1e-6)


def test_fitted_needs_two_batch_sizes() -> None:
    with pytest.raises(ValueError, match="two or more"):
        MemoryModel().fitted(512, 512, [(1, 3_000_000_000)])


def test_capacity_halves_after_out_of_memory_and_calibration_resets_it() -> None:
    capacity = Capacity(MemoryModel(), fixed_budget(40 * GIB))
    request = GenerationRequest(prompt="x")
    assert capacity.max_batch(request) > 8
    capacity.record_out_of_memory(request, 8)
    assert capacity.max_batch(request) == 4
    bigger = GenerationRequest(prompt="x", width=1024, height=512)
    assert capacity.max_batch(bigger) == 2
    measured = MemoryModel(fixed_bytes=2e9, image_bytes_per_pixel=1000, decode_bytes_per_pixel=0)
    model = capacity.calibrate(lambda n: measured.batch_bytes(512, 512, n))
    assert model.image_bytes_per_pixel == pytest.approx(1000, rel=1e-6)
    assert capacity.max_batch(request) > 8
