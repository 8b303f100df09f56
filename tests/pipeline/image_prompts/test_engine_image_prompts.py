"""Image prompts in the engine, on the tiny model with a tiny h94-layout IP-Adapter.

diffusers' own loader (`load_ip_adapter` on a StableDiffusionPipeline of the same tiny parts) is
the reference for the image embeddings, one UNet call and the per-block style scales.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.backend import ImageTask
from pipeline.errors import UserError
from pipeline.image_prompts.adapter import (
    ImagePromptAddition,
    ImagePromptModels,
    apply_adapter,
    mixed_embeds,
)
from pipeline.image_prompts.files import NOT_CONFIGURED, locate_image_prompt_files
from pipeline.image_prompts.plan import plan_slots
from pipeline.infotext import parse_parameters
from pipeline.lora.cache import AdapterCache
from pipeline.lora.source import AdapterSource
from pipeline.planner import batch_key
from pipeline.request import HypernetRef, ImagePrompt, LoraRef
from tests.ip_adapter_files import ADAPTER_FILE, write_adapter, write_encoder
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine
from tests.pipeline.lora import make_files as mf
from tests.pipeline.lora.hypernet_files import write_hypernetwork
from tests.pipeline.test_engine_loras import Files


def picture(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> str:
    """A random RGB picture saved as PNG, as uploads store them."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("image-prompts")
    write_adapter(folder / "adapter")
    write_encoder(folder / "encoder")
    for seed in range(3):
        picture(folder / f"picture{seed}.png", seed)
    return folder


@pytest.fixture(scope="module")
def models(folder: Path) -> ImagePromptModels:
    files = locate_image_prompt_files(
        str(folder / "adapter" / ADAPTER_FILE), str(folder / "encoder")
    )
    assert files is not None
    return ImagePromptModels(files)


@pytest.fixture(scope="module")
def engine(models: ImagePromptModels, folder: Path):
    engine = tiny_engine()
    engine.image_prompts = models
    hypernets = {"anime": write_hypernetwork(folder / "anime.safetensors", seed=1)}
    pipe = engine.models.get("tiny").pipe
    texts = mf.text_targets(pipe.text_encoder)
    tensors = mf.kohya_tensors(mf.unet_targets(pipe.unet), texts, mf.lora_parts, 4, 4.0)
    loras = {"lora": mf.write(folder / "lora.safetensors", tensors)}
    engine.adapters = AdapterSource(
        Files(loras), Files({}), AdapterCache(64 * 1024**2), hypernetworks=Files(hypernets)
    )
    return engine


@pytest.fixture(scope="module")
def base(engine) -> np.ndarray:
    return pixels(run(engine, SMALL)[0])


def prompted(folder: Path, *prompts: tuple[int, float, bool]) -> tuple[ImagePrompt, ...]:
    return tuple(ImagePrompt(str(folder / f"picture{i}.png"), w, s) for i, w, s in prompts)


def image_with(engine, folder: Path, *prompts: tuple[int, float, bool], **changes) -> np.ndarray:
    return pixels(run(engine, SMALL, image_prompts=prompted(folder, *prompts), **changes)[0])


def test_weight_zero_is_bit_identical_to_no_image_prompt(engine, folder, base) -> None:
    assert np.array_equal(image_with(engine, folder, (0, 0.0, False)), base)


def test_weight_one_changes_the_image_more_than_a_small_weight(engine, folder, base) -> None:
    near = np.abs(image_with(engine, folder, (0, 0.1, False)) - base).mean()
    far = np.abs(image_with(engine, folder, (0, 1.0, False)) - base).mean()
    assert 0 < near < far


def test_other_pictures_give_other_images(engine, folder) -> None:
    one = image_with(engine, folder, (0, 1.0, False))
    other = image_with(engine, folder, (1, 1.0, False))
    assert not np.array_equal(one, other)


def test_the_unet_is_pristine_after_an_image_prompt_batch(engine, folder, base) -> None:
    unet = engine.models.get("tiny").pipe.unet
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    image_with(engine, folder, (0, 1.0, False), (2, 0.5, True))
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before
    assert unet.encoder_hid_proj is None and unet.config.encoder_hid_dim_type is None
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)


def test_two_jobs_with_different_pictures_share_a_batch_and_each_equals_its_solo_run(
    engine, folder
) -> None:
    first = replace(SMALL, image_prompts=prompted(folder, (0, 1.0, False)))
    second = replace(SMALL, image_prompts=prompted(folder, (1, 1.0, False)), seed=7)
    assert batch_key(first) == batch_key(second)
    tasks = [ImageTask("a", 0, first), ImageTask("b", 0, second)]
    together = engine.run(tasks, lambda *_: None, lambda: False)
    # As every batch: within one level of a solo run (batched float sums), picture for picture.
    for result, request in zip(together, (first, second), strict=True):
        alone = pixels(run(engine, request)[0])
        assert np.abs(pixels(result) - alone).max() <= 1
        swapped = replace(
            request, image_prompts=(first if request is second else second).image_prompts
        )
        assert np.abs(pixels(result) - pixels(run(engine, swapped)[0])).max() > 1


def test_a_hypernetwork_still_works_with_an_image_prompt(engine, folder) -> None:
    hypernet = (HypernetRef("anime", 1.0),)
    alone = image_with(engine, folder, (0, 1.0, False))
    both = image_with(engine, folder, (0, 1.0, False), hypernets=hypernet)
    assert not np.array_equal(alone, both)
    assert not np.array_equal(both, pixels(run(engine, SMALL, hypernets=hypernet)[0]))
    unet = engine.models.get("tiny").pipe.unet
    assert not any(module._forward_pre_hooks for module in unet.modules())


def test_a_lora_still_works_with_an_image_prompt_and_leaves_no_trace(engine, folder, base) -> None:
    lora = (LoraRef("lora", 1.0, 1.0),)
    alone = image_with(engine, folder, (0, 1.0, False))
    both = image_with(engine, folder, (0, 1.0, False), loras=lora)
    assert not np.array_equal(alone, both)
    assert not np.array_equal(both, pixels(run(engine, SMALL, loras=lora)[0]))
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)


def test_the_infotext_names_the_adapter_as_a1111s_controlnet_extension_does(engine, folder) -> None:
    """ip-adapter_clip_sd15 has no resolution or threshold sliders (the extension's
    preprocessor table), so each reads the hidden slider's 0.5; values are Python's str."""
    results = run(engine, SMALL, image_prompts=prompted(folder, (0, 0.8, False), (1, 1.0, True)))
    _, _, fields = parse_parameters(results[0].parameters)
    digest = engine.image_prompts.short_hash
    assert fields["ControlNet 0"] == (
        f"Module: ip-adapter_clip_sd15, Model: ip-adapter_sd15 [{digest}], Weight: 0.8, "
        "Resize Mode: Crop and Resize, Processor Res: 0.5, Threshold A: 0.5, Threshold B: 0.5, "
        "Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"
    )
    assert fields["ControlNet 1"].startswith("Module: ip-adapter_clip_sd15")
    assert fields["Style reference"] == "ControlNet 1"


def test_image_prompts_without_an_adapter_are_refused(folder) -> None:
    bare = tiny_engine()
    with pytest.raises(UserError) as refused:
        run(bare, SMALL, image_prompts=prompted(folder, (0, 1.0, False)))
    assert str(refused.value) == NOT_CONFIGURED


# diffusers as the reference


@pytest.fixture(scope="module")
def reference(folder: Path) -> Any:
    """diffusers' StableDiffusionPipeline of the tiny parts, with the adapter its own way."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from pipeline.tiny import build_tiny_components

    encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "encoder")
    pipe: Any = StableDiffusionPipeline(
        **build_tiny_components(),
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        image_encoder=encoder,
        requires_safety_checker=False,
    )
    pipe.load_ip_adapter(
        str(folder / "adapter"), subfolder="", weight_name=ADAPTER_FILE, image_encoder_folder=None
    )
    return pipe


@torch.inference_mode()
def test_embeddings_and_a_unet_call_equal_diffusers_load_ip_adapter(
    reference, models, folder, engine
) -> None:
    image = Image.open(folder / "picture0.png").convert("RGB")
    (expected,) = reference.prepare_ip_adapter_image_embeds(image, None, "cpu", 1, True)
    prompts = prompted(folder, (0, 1.0, False))
    slots = plan_slots(prompts)
    (ours,) = mixed_embeds(
        models, [[Path(prompts[0].image)]], slots, torch.device("cpu"), torch.float32
    )
    torch.testing.assert_close(expected[1:], ours)
    assert not expected[:1].any()  # the negative rows: a zero embedding

    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    wanted = reference.unet(
        latents, 500, encoder_hidden_states=context, added_cond_kwargs={"image_embeds": [expected]}
    ).sample
    unet = engine.models.get("tiny").pipe.unet
    addition = ImagePromptAddition([ours])
    owners = torch.tensor([0, 0])
    kwargs = addition.unet_kwargs(latents, 500, context, owners, 0, torch.tensor([True, False]))
    with apply_adapter(unet, models.weights(torch.device("cpu"), torch.float32), slots):
        got = unet(latents, 500, encoder_hidden_states=context, **kwargs).sample
    torch.testing.assert_close(got, wanted)


def test_a_style_reference_scales_only_diffusers_style_block_for_sd15(
    reference, models, engine, folder
) -> None:
    reference.set_ip_adapter_scale({"up": {"block_1": 0.7}})
    expected = {
        name: [float(s) for s in p.scale]
        for name, p in reference.unet.attn_processors.items()
        if hasattr(p, "scale")
    }
    seen: dict[str, list[float]] = {}
    unet = engine.models.get("tiny").pipe.unet

    def record(*_: object) -> None:
        for name, processor in unet.attn_processors.items():
            if hasattr(processor, "scale"):
                seen[name] = list(processor.scale)

    handle = unet.register_forward_pre_hook(record)
    try:
        image_with(engine, folder, (0, 0.7, True))
    finally:
        handle.remove()
    assert seen == expected
    assert {name for name, scale in seen.items() if any(scale)} == {
        name for name in seen if name.startswith("up_blocks.1.")
    }
