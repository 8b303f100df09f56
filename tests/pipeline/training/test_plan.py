"""The plan's figures against kohya's formulas, worked out by hand here."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.training.dataset import Dataset, TrainingImage
from pipeline.training.plan import (
    PRESETS,
    TrainingOptions,
    bucket_sizes,
    nearest_bucket,
    plan_training,
)


def _dataset(*sizes: tuple[int, int], repeats: int | None = None, caption: str = "") -> Dataset:
    folder = f"{repeats}_fox" if repeats else "fox"
    images = tuple(
        TrainingImage(Path(f"/set/{folder}/{i}.png"), caption, w, h, repeats)
        for i, (w, h) in enumerate(sizes)
    )
    return Dataset(images, {})


def test_total_steps_is_images_times_repeats_times_epochs_over_batch() -> None:
    # 8 pictures in 10_fox/, batch 2, 5 epochs asked for by steps: 8 x 10 x 5 / 2 = 200.
    dataset = _dataset(*[(512, 512)] * 8, repeats=10)
    plan = plan_training(dataset, TrainingOptions.for_preset("fox", batch=2, steps=200))
    assert (plan.steps_per_epoch, plan.epochs, plan.total_steps) == (40, 5, 200)
    assert plan.repeats == {"10_fox": 10}


def test_the_preset_total_is_clamped_to_the_guides_range() -> None:
    # character: 12 repeats, 10 epochs. 20 pictures x 12 x 10 = 2,400 steps: inside 1,500-6,000.
    plan = plan_training(_dataset(*[(512, 512)] * 20), TrainingOptions.for_preset("fox"))
    assert (plan.steps_per_epoch, plan.epochs, plan.total_steps) == (240, 10, 2_400)
    # 5 pictures x 12 x 10 = 600 is below 1,500: 1,500 steps, ceil(1,500 / 60) = 25 epochs.
    few = plan_training(_dataset(*[(512, 512)] * 5), TrainingOptions.for_preset("fox"))
    assert (few.steps_per_epoch, few.total_steps, few.epochs) == (60, 1_500, 25)
    # concept: 50 repeats, 8 epochs; 30 pictures x 50 x 8 = 12,000 is clamped to 6,000.
    many = plan_training(
        _dataset(*[(512, 512)] * 30), TrainingOptions.for_preset("fox", preset="concept")
    )
    assert (many.steps_per_epoch, many.total_steps, many.epochs) == (1_500, 6_000, 4)


def test_each_bucket_is_cut_into_its_own_batches() -> None:
    # 3 square and 1 wide picture, 1 repeat, batch 2: ceil(3/2) + ceil(1/2) = 3 steps per epoch.
    dataset = _dataset((512, 512), (512, 512), (600, 600), (900, 500), repeats=1)
    plan = plan_training(dataset, TrainingOptions.for_preset("fox", batch=2, steps=9))
    assert plan.steps_per_epoch == 3 and plan.epochs == 3
    # 900 / 500 = 1.8: 640x384 (1.67) is nearer than 704x320 (2.2).
    assert plan.buckets == {(512, 512): 3, (640, 384): 1}


def test_buckets_are_kohyas_at_512() -> None:
    # sd-scripts' make_bucket_resolutions((512, 512)), 256-1024 in steps of 64, by hand:
    # width w gets min(1024, 262144 // w // 64 * 64) when that is at least 256.
    expected = {(512, 512)}
    for width in range(256, 1025, 64):
        height = min(1024, 262_144 // width // 64 * 64)
        if height >= 256:
            expected |= {(width, height), (height, width)}
    sizes = bucket_sizes(512)
    assert set(sizes) == expected
    assert (256, 1024) in sizes and (384, 640) in sizes and (448, 576) in sizes
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in sizes)


def test_a_picture_goes_to_the_bucket_nearest_its_aspect_ratio() -> None:
    sizes = bucket_sizes(512)
    assert nearest_bucket(1920, 1080, sizes) == (640, 384)  # 1.78: 1.67 beats 704x320's 2.2
    assert nearest_bucket(1000, 1000, sizes) == (512, 512)
    assert nearest_bucket(300, 1200, sizes) == (256, 1024)


def test_the_trigger_word_leads_every_caption() -> None:
    dataset = _dataset((512, 512), (512, 512), caption="")
    captioned = _dataset((512, 512), caption="grass, foxy, photo")
    options = TrainingOptions.for_preset("fox", trigger="foxy", steps=10)
    assert [p.caption for p in plan_training(dataset, options).images] == ["foxy", "foxy"]
    plan = plan_training(captioned, options)
    assert plan.images[0].caption == "foxy, grass, photo"
    assert plan.tag_frequency == {"12_fox": {"foxy": 1, "grass": 1, "photo": 1}}


def test_options_come_from_the_preset_and_round_trip_through_json() -> None:
    options = TrainingOptions.for_preset("fox", preset="style", steps=None, lr=2e-4)
    style = PRESETS["style"]
    assert (options.rank, options.alpha, options.te_lr) == (style.rank, style.alpha, 5e-5)
    assert options.lr == 2e-4 and options.trigger == "fox"
    assert TrainingOptions.from_json(options.to_json()) == options
    prodigy = TrainingOptions.for_preset("fox", optimizer="prodigy")
    assert (prodigy.lr, prodigy.te_lr) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rank": 0}, "rank must be 1-256"),
        ({"resolution": 500}, "multiple of 64"),
        ({"optimizer": "sgd"}, "optimizer must be one of adamw, prodigy"),
        ({"steps": 0}, "steps must be"),
        ({"batch": 64}, "batch must be 1-16"),
        ({"trigger": "a, b"}, "without commas"),
        ({"caption_dropout": 1.0}, "caption dropout"),
    ],
)
def test_bad_options_are_refused_with_their_range(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        TrainingOptions.for_preset("fox", **change)


def test_bad_names_presets_and_json_are_refused() -> None:
    with pytest.raises(UserError, match="name must be"):
        TrainingOptions.for_preset("../fox")
    with pytest.raises(UserError, match="unknown preset 'anime'"):
        TrainingOptions.for_preset("fox", preset="anime")
    with pytest.raises(UserError, match="unknown training options colour"):
        TrainingOptions.from_json({"name": "fox", "trigger": "fox", "colour": 1})


def test_describe_says_steps_epochs_repeats_buckets_and_time() -> None:
    plan = plan_training(
        _dataset(*[(512, 512)] * 8, repeats=10), TrainingOptions.for_preset("fox", steps=200)
    )
    text = plan.describe(steps_per_second=2.0)
    assert "8 pictures, repeats 10_fox x10" in text
    assert "3 epoch(s) of 80 step(s): 200 steps in all" in text
    assert "512x512 (8)" in text and "about 2 min" in text
    assert plan.estimated_seconds(2.0) == 100.0
