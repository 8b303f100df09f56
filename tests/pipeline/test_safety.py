"""The safety checker, loaded as a deployment loads it, with verdicts forced from outside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.backend import ImageTask
from pipeline.engine import Engine
from pipeline.errors import UserError
from pipeline.models import choose_placement
from pipeline.safety import SafetyChecker, load_safety_checker
from tests.pipeline.engine_helpers import SMALL, tiny_engine
from tests.pipeline.tiny_safety import save_checker, save_tiny_checker, tiny_checker

CPU = choose_placement(device="cpu")


def pictures() -> list[Image.Image]:
    """Four images far apart: black, white, red, and noise."""
    noise = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    plain = [Image.new("RGB", (48, 48), colour) for colour in ("black", "white", "red")]
    return [*plain, Image.fromarray(noise, "RGB")]


def load(folder: Path) -> SafetyChecker:
    return load_safety_checker(str(folder), CPU)


@pytest.mark.parametrize("flags_every_image", [True, False])
def test_a_saved_checker_loads_from_its_folder_and_gives_the_forced_verdict(
    tmp_path: Path, flags_every_image: bool
) -> None:
    checker = load(save_tiny_checker(tmp_path, flags_every_image))
    assert checker.flagged(pictures()) == [flags_every_image] * 4


def test_verdicts_follow_the_checkers_rule_image_by_image_in_batch_order(
    tmp_path: Path,
) -> None:
    """A threshold between the images' similarities to one concept flags half of them. The
    expected verdicts apply diffusers' rule (round(cosine similarity - threshold, 3) > 0 for
    any concept) to embeddings from the checker's own CLIP layers, outside the code under test."""
    from transformers import CLIPImageProcessorPil

    model = tiny_checker()
    images = pictures()
    save_checker(tmp_path, model)
    processor = CLIPImageProcessorPil.from_pretrained(tmp_path)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt").pixel_values
        embeds = model.visual_projection(model.vision_model(pixels)[1])
        normalise = torch.nn.functional.normalize
        cosine = (normalise(embeds) @ normalise(model.concept_embeds).T).numpy()
        # Concept 0 alone can match: its threshold halfway between the 2nd and 3rd image.
        low, high = sorted(cosine[:, 0])[1:3]
        assert high - low > 0.01, "the images must be told apart by concept 0"
        model.concept_embeds_weights[0] = float(low + high) / 2
    save_checker(tmp_path, model)
    thresholds = model.concept_embeds_weights.numpy()
    expected = [
        any(round(c - t, 3) > 0 for c, t in zip(row, thresholds, strict=True)) for row in cosine
    ]
    assert expected.count(True) == 2

    checker = load(tmp_path)
    assert checker.flagged(images) == expected
    assert checker.flagged(images[::-1]) == expected[::-1]


def test_a_flagged_image_is_left_as_it_was(tmp_path: Path) -> None:
    """diffusers' pipelines paint flagged images black; the verdict alone comes back here."""
    checker = load(save_tiny_checker(tmp_path, flags_every_image=True))
    images = pictures()
    before = [image.tobytes() for image in images]
    assert all(checker.flagged(images))
    assert [image.tobytes() for image in images] == before


def test_the_engine_gives_every_result_its_verdict_and_keeps_the_image(tmp_path: Path) -> None:
    tasks = [ImageTask("job", index, SMALL) for index in range(2)]
    plain = tiny_engine().run(tasks, lambda *_: None, lambda: False)
    models = tiny_engine().models
    checked_engine = Engine(models, safety=load(save_tiny_checker(tmp_path, True)))
    checked = checked_engine.run(tasks, lambda *_: None, lambda: False)

    assert [result.flagged for result in plain] == [None, None]
    assert [result.flagged for result in checked] == [True, True]
    assert [r.image.tobytes() for r in checked] == [r.image.tobytes() for r in plain]
    assert [r.parameters for r in checked] == [r.parameters for r in plain], "infotext unchanged"


def test_weights_missing_offline_stop_start_up_with_the_ways_to_fix_it() -> None:
    with pytest.raises(UserError) as raised:
        load_safety_checker("CompVis/stable-diffusion-safety-checker", CPU)
    message = str(raised.value)
    assert "\n" not in message
    assert "hf download CompVis/stable-diffusion-safety-checker" in message
    assert "SAFETY_CHECKER_MODEL" in message
    assert "SAFETY_CHECKER=off" in message


def test_a_folder_without_weights_is_named_in_the_refusal(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="could not be loaded") as raised:
        load(tmp_path)
    assert f"config.json and model.safetensors in {tmp_path}" in str(raised.value)
