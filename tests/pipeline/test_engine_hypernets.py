"""Hypernetworks in the engine: they change the image by strength, chain, and leave no trace.

Runs the real engine on the tiny model (64x64, 3 steps) with A1111-style hypernetworks for its
attention widths (32 and 64), converted to the agreed `.safetensors` layout.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bot.requests import build_request
from bot.settings import load_settings
from pipeline.backend import ImageTask
from pipeline.errors import UserError
from pipeline.infotext import parse_parameters
from pipeline.lora.cache import AdapterCache
from pipeline.lora.source import AdapterSource
from pipeline.request import HypernetRef
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine
from tests.pipeline.lora.hypernet_files import write_hypernetwork
from tests.pipeline.test_engine_loras import Files


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("engine-hypernets")
    engine = tiny_engine()
    hypernets = {
        "anime": write_hypernetwork(folder / "anime.safetensors", seed=1),
        "normed": write_hypernetwork(folder / "normed.safetensors", seed=2, layer_norm=True),
    }
    engine.adapters = AdapterSource(
        Files({}), Files({}), AdapterCache(64 * 1024**2), hypernetworks=Files(hypernets)
    )
    return engine


@pytest.fixture(scope="module")
def base(engine) -> np.ndarray:
    return pixels(run(engine, SMALL)[0])


def distance(image: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(image - other).mean())


def with_hypernets(engine, *refs: HypernetRef) -> np.ndarray:
    return pixels(run(engine, SMALL, hypernets=refs)[0])


def test_strength_one_changes_the_image_more_than_a_small_strength(engine, base) -> None:
    near = distance(with_hypernets(engine, HypernetRef("anime", 0.1)), base)
    far = distance(with_hypernets(engine, HypernetRef("anime", 1.0)), base)
    assert 0 < near < far


def test_strength_zero_is_bit_identical_to_no_hypernetwork(engine, base) -> None:
    assert np.array_equal(with_hypernets(engine, HypernetRef("anime", 0.0)), base)


def test_order_matters_as_each_one_transforms_the_previous_output(engine) -> None:
    forward = with_hypernets(engine, HypernetRef("anime", 1.0), HypernetRef("normed", 1.0))
    backward = with_hypernets(engine, HypernetRef("normed", 1.0), HypernetRef("anime", 1.0))
    assert distance(forward, backward) > 0


def test_the_model_is_pristine_after_a_hypernetwork_batch(engine, base) -> None:
    with_hypernets(engine, HypernetRef("normed", 1.0))
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)
    unet = engine.models.get("tiny").pipe.unet
    assert not any(module._forward_pre_hooks for module in unet.modules())


def test_the_model_is_pristine_after_a_batch_that_failed_midway(engine, base) -> None:
    steps = iter(range(100))

    def stop_after_a_step() -> bool:
        if next(steps) == 1:
            raise RuntimeError("worker stopped")
        return False

    request = replace(SMALL, hypernets=(HypernetRef("anime", 1.0),))
    with pytest.raises(RuntimeError, match="worker stopped"):
        engine.run([ImageTask("test", 0, request)], lambda *_: None, stop_after_a_step)
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)


def test_an_unknown_name_is_a_user_error(engine) -> None:
    with pytest.raises(UserError, match="named 'missing'"):
        with_hypernets(engine, HypernetRef("missing", 1.0))


def test_the_tag_stays_in_the_prompt_and_no_field_is_added_as_a1111_writes_it(
    engine, tmp_path
) -> None:
    """A1111 since its extra networks writes no `Hypernet` field: the tag in the prompt is the
    record, and its paste code turns an old `Hypernet:` field into a tag, so writing both
    would apply the hypernetwork twice there."""
    settings = load_settings(None, data_dir=tmp_path, model="tiny")
    built = build_request(
        "a red fox <hypernet:ANIME:0.8> in the snow",
        settings,
        known_hypernets={"anime"},
        explicit={"width": 64, "height": 64, "steps": 3, "seed": 42, "count": 1},
    ).request
    assert built.hypernets == (HypernetRef("anime", 0.8),)
    assert built.prompt == "a red fox  in the snow <hypernet:anime:0.8>"
    result = run(engine, built)[0]
    prompt, _, fields = parse_parameters(result.parameters)
    assert prompt == built.prompt
    assert not {key for key in fields if key.startswith("Hypernet")}
    assert distance(pixels(result), pixels(run(engine, built, hypernets=())[0])) > 0
