import pytest

from pipeline.memory import GIB, Capacity, ControlLoad, MemoryModel, fixed_budget, sampled_pixels
from pipeline.request import ControlUnit, GenerationRequest, HiresSpec


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


def _with_units(*weights: float, model: str = "canny") -> GenerationRequest:
    units = tuple(ControlUnit(model, f"map{i}.png", weight) for i, weight in enumerate(weights))
    return GenerationRequest(prompt="x", controls=units)


def test_a_controlnet_adds_its_fp16_weights_once_and_a_share_per_image_for_each_unit() -> None:
    model = MemoryModel()
    plain = model.batch_bytes(512, 512, 4)
    one = model.batch_bytes(512, 512, 4, control=ControlLoad(models=1, units=1))
    two_units = model.batch_bytes(512, 512, 4, control=ControlLoad(models=1, units=2))
    # 361M parameters in fp16 (diffusers' SD1.5 ControlNet), and 27.6% of an image's term.
    per_image = (model.batch_bytes(512, 512, 2) - model.batch_bytes(512, 512, 1)) * 4
    assert one - plain == pytest.approx(0.72e9 + 0.28 * per_image, rel=0.01)
    assert two_units - one == pytest.approx(0.28 * per_image, rel=0.01)


def test_units_of_weight_0_cost_nothing_and_a_model_used_twice_loads_once() -> None:
    assert ControlLoad.of(_with_units(0.0).controls) == ControlLoad(0, 0)
    assert ControlLoad.of(_with_units(1.0, 0.5).controls) == ControlLoad(1, 2)
    units = (*_with_units(1.0).controls, ControlUnit("depth", "map.png"))
    assert ControlLoad.of(units) == ControlLoad(2, 2)


def test_a_request_with_units_fits_fewer_images_in_a_batch() -> None:
    capacity = Capacity(MemoryModel(), fixed_budget(8 * GIB))
    plain = capacity.max_batch(GenerationRequest(prompt="x"))
    assert capacity.max_batch(_with_units(1.0)) < plain
    assert capacity.max_batch(_with_units(1.0, 1.0, 1.0)) < capacity.max_batch(_with_units(1.0))
    assert capacity.max_batch(_with_units(0.0)) == plain


def test_after_out_of_memory_a_request_with_units_is_held_lower_than_one_without() -> None:
    capacity = Capacity(MemoryModel(), fixed_budget(40 * GIB))
    capacity.record_out_of_memory(GenerationRequest(prompt="x"), 8)
    assert capacity.max_batch(GenerationRequest(prompt="x")) == 4
    assert capacity.max_batch(_with_units(1.0, 1.0)) == 2  # 4 / 1.56, rounded down
