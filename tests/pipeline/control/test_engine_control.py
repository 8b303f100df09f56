"""ControlNet units in the engine: the real engine on the tiny model with tiny ControlNet files.

Expected step numbers come from sd-webui-controlnet's rule (`scripts/hook.py`,
`guidance_schedule_handler`): a call is guided when `sampling_step / sampling_steps` is within
[start, end], `sampling_steps` being the steps the pass runs and `sampling_step` the number the
sampler's callback last set (0 before the first step, then the step just finished).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel
from PIL import Image

from pipeline.backend import ImageTask
from pipeline.control.preprocess import control_map
from pipeline.engine import Engine
from pipeline.errors import UserError
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.planner import batch_key
from pipeline.request import ControlUnit, GenerationRequest, HiresSpec, InpaintSpec, Mode
from tests.control_files import tiny_controlnet, write_diffusers_layout, write_original_layout
from tests.pipeline.engine_helpers import pixels, run
from tests.pipeline.fakes import DictFiles

SIZE = 64
BASE = GenerationRequest(
    "a red fox in the snow", width=SIZE, height=SIZE, steps=3, seed=42, sampler="Euler"
)


def picture(seed: int, size: int = SIZE) -> Image.Image:
    """A picture with edges (blocks of colour), so its canny map has lines."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-control")


@pytest.fixture(scope="module")
def engine(folder: Path) -> Engine:
    sources = {name: resolve_model(name) for name in ("tiny", "tiny-inpainting")}
    engine = Engine(ModelManager(sources, "tiny", choose_placement(device="cpu")))
    first, second = tiny_controlnet(1), tiny_controlnet(2)
    engine.controlnets = DictFiles(
        {
            "canny": write_original_layout(folder / "canny.safetensors", first),
            "canny-diffusers": write_diffusers_layout(folder / "canny-d.safetensors", first),
            "depth": write_original_layout(folder / "depth.safetensors", second),
        },
        "ControlNet",
    )
    for seed in (1, 2):
        control_map(picture(seed), "canny", SIZE, SIZE).save(folder / f"map{seed}.png")
    return engine


def unit(folder: Path, model: str = "canny", seed: int = 1, **changes: Any) -> ControlUnit:
    return replace(
        ControlUnit(model, str(folder / f"map{seed}.png"), preprocessor="canny"), **changes
    )


@pytest.fixture(scope="module")
def plain(engine: Engine) -> np.ndarray:
    return pixels(run(engine, BASE)[0])


def test_weight_0_gives_the_image_without_control_bit_for_bit(engine, folder, plain) -> None:
    result = run(engine, BASE, controls=(unit(folder, weight=0.0),))[0]
    assert np.array_equal(pixels(result), plain)


def test_weight_1_changes_the_image(engine, folder, plain) -> None:
    result = run(engine, BASE, controls=(unit(folder),))[0]
    assert np.abs(pixels(result) - plain).mean() > 1


def test_both_layouts_of_one_controlnet_give_identical_images(engine, folder) -> None:
    original = run(engine, BASE, controls=(unit(folder, "canny"),))[0]
    diffusers_layout = run(engine, BASE, controls=(unit(folder, "canny-diffusers"),))[0]
    assert np.array_equal(pixels(original), pixels(diffusers_layout))


@contextmanager
def controlnet_calls() -> Iterator[list[dict[str, Any]]]:
    """What every ControlNet forward call received, in call order."""
    seen: list[dict[str, Any]] = []
    forward = ControlNetModel.forward

    def recording(self: Any, sample: Any, timestep: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append({"sample": sample.shape, "cond": kwargs["controlnet_cond"].clone()})
        return forward(self, sample, timestep, *args, **kwargs)

    ControlNetModel.forward = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        ControlNetModel.forward = forward  # type: ignore[method-assign]


def guided_calls(engine: Engine, request: GenerationRequest) -> list[int]:
    """For each denoiser call of the request's (one) image, how many ControlNet calls it made."""
    counts: list[int] = []
    with controlnet_calls() as seen:

        def on_step(*_: object) -> None:
            counts.append(len(seen) - sum(counts))

        engine.run([ImageTask("t", 0, request)], on_step, lambda: False)
    return counts


@pytest.mark.parametrize(
    ("start", "end", "guided"),
    [
        # 10 steps: step k reads max(k - 1, 0) / 10.
        (0.0, 1.0, range(10)),
        (0.0, 0.5, range(0, 7)),  # up to 5/10 = 0.5 at step 6
        (0.5, 1.0, range(6, 10)),  # from 5/10 at step 6
    ],
)
def test_start_and_end_guide_the_steps_a1111_guides(engine, folder, start, end, guided) -> None:
    request = replace(BASE, steps=10, controls=(unit(folder, start=start, end=end),))
    counts = guided_calls(engine, request)
    assert counts == [1 if step in guided else 0 for step in range(10)]


def test_an_img2img_pass_counts_only_the_steps_it_runs(engine, folder) -> None:
    picture(3).save(folder / "init.png")
    request = replace(
        BASE,
        steps=10,
        mode=Mode.IMG2IMG,
        init_image=str(folder / "init.png"),
        strength=0.5,
        controls=(unit(folder, start=0.5, end=1.0),),
    )
    # t_enc = int(0.5 * 10) = 5: the pass runs 6 steps, step k reads max(k - 1, 0) / 6,
    # which reaches 0.5 at step 4.
    assert guided_calls(engine, request) == [0, 0, 0, 0, 1, 1]


def test_both_calls_of_a_two_call_step_follow_the_step(engine, folder) -> None:
    request = replace(BASE, steps=5, sampler="Heun", controls=(unit(folder, end=0.5),))
    # Heun calls the denoiser twice a step, once in the last; step k reads max(k - 1, 0) / 5,
    # over 0.5 from step 4 (0.6): steps 0-3 (8 calls) are guided, the last call is not.
    assert guided_calls(engine, request) == [1] * 8 + [0]


def test_two_jobs_with_different_maps_share_a_batch_and_keep_their_own_images(
    engine, folder
) -> None:
    """Within 1 of 255: the batched UNet sums in another order than the solo one on the CPU
    (float noise), as for any two batched jobs (tests/pipeline/test_engine.py)."""
    first = replace(BASE, controls=(unit(folder, seed=1),))
    second = replace(BASE, seed=7, controls=(unit(folder, seed=2),))
    assert batch_key(first) == batch_key(second)
    alone = [pixels(run(engine, request)[0]) for request in (first, second)]
    tasks = [ImageTask("a", 0, first), ImageTask("b", 0, second)]
    together = engine.run(tasks, lambda *_: None, lambda: False)
    for result, expected in zip(together, alone, strict=True):
        assert np.abs(pixels(result) - expected).max() <= 1
    assert not np.array_equal(
        alone[0], pixels(run(engine, first, controls=(unit(folder, seed=2),))[0])
    )


@contextmanager
def unet_residuals(engine: Engine) -> Iterator[list[Any]]:
    """The ControlNet residuals each UNet call received (None for a call without)."""
    unet = engine.models.get("tiny").pipe.unet
    seen: list[Any] = []

    def record(_module: object, _args: object, kwargs: dict[str, Any]) -> None:
        down = kwargs.get("down_block_additional_residuals")
        seen.append(None if down is None else [r.clone() for r in down])

    handle = unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_two_units_add_their_residuals(engine, folder) -> None:
    def first_call(weights: tuple[float, float]) -> list[Any]:
        units = (
            unit(folder, "canny", 1, weight=weights[0]),
            unit(folder, "depth", 2, weight=weights[1]),
        )
        with unet_residuals(engine) as seen:
            run(engine, BASE, steps=1, controls=units)
        return seen[0]

    both, only_first, only_second = (
        first_call((1.0, 0.5)),
        first_call((1.0, 0.0)),
        first_call((0.0, 0.5)),
    )
    for total, a, b in zip(both, only_first, only_second, strict=True):
        torch.testing.assert_close(total, a + b)
    assert not torch.allclose(both[0], only_first[0])


def test_hires_fix_guides_both_passes_with_the_map_at_each_size(engine, folder, plain) -> None:
    request = replace(
        BASE, hires=HiresSpec(scale=2.0, steps=2, denoise=0.5), controls=(unit(folder),)
    )
    with controlnet_calls() as seen:
        result = run(engine, request)[0]
    sizes = [tuple(call["cond"].shape[-2:]) for call in seen]
    assert sizes == [(SIZE, SIZE)] * 3 + [(2 * SIZE, 2 * SIZE)] * 2
    assert result.image.size == (2 * SIZE, 2 * SIZE)
    # The hires map is the stored map resized with Lanczos, as 0..1 RGB.
    stored = Image.open(folder / "map1.png").convert("RGB")
    expected = np.asarray(stored.resize((2 * SIZE, 2 * SIZE), Image.Resampling.LANCZOS)) / 255
    np.testing.assert_allclose(seen[-1]["cond"][0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("preprocessor", ["canny", "none"])
def test_a_canny_unit_is_softened_in_the_hires_pass_only(engine, folder, preprocessor) -> None:
    """sd-webui-controlnet forces "soft injection" on canny units in the hires pass: residual
    i of 13 (SD1.5; the tiny model has 7) scaled by 0.825 ** (12 - i), the mid block's by 1."""
    request = replace(BASE, steps=1, hires=HiresSpec(scale=2.0, steps=1, denoise=0.5))
    controls = (unit(folder, weight=0.8, preprocessor=preprocessor),)
    with unet_residuals(engine) as given, controlnet_outputs() as made:
        run(engine, request, controls=controls)
    assert len(given) == len(made) == 2  # one call in each pass
    count = len(made[1])
    soft = [0.825 ** (count - 1 - i) if preprocessor == "canny" else 1.0 for i in range(count)]
    for residual, output in zip(given[0], made[0], strict=False):
        torch.testing.assert_close(residual, output * 0.8)
    for residual, output, scale in zip(given[1], made[1], soft, strict=False):
        torch.testing.assert_close(residual, output * 0.8 * scale)


@contextmanager
def controlnet_outputs() -> Iterator[list[list[Any]]]:
    """The residuals each ControlNet call returned, before any weight."""
    seen: list[list[Any]] = []
    forward = ControlNetModel.forward

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        down, mid = forward(self, *args, **kwargs)
        seen.append([r.clone() for r in down] + [mid.clone()])
        return down, mid

    ControlNetModel.forward = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        ControlNetModel.forward = forward  # type: ignore[method-assign]


def test_an_img2img_job_with_a_unit_runs_and_is_guided(engine, folder) -> None:
    picture(4).save(folder / "init4.png")
    request = replace(BASE, mode=Mode.IMG2IMG, init_image=str(folder / "init4.png"), strength=0.6)
    without = pixels(run(engine, request)[0])
    guided = pixels(run(engine, request, controls=(unit(folder),))[0])
    assert np.abs(guided - without).mean() > 1


def test_an_inpainting_unet_gives_the_controlnet_the_first_4_channels(engine, folder) -> None:
    picture(5).save(folder / "edit.png")
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(folder / "edit-mask.png")
    request = replace(
        BASE,
        model="tiny-inpainting",
        mode=Mode.INPAINT,
        strength=0.75,
        init_image=str(folder / "edit.png"),
        mask_image=str(folder / "edit-mask.png"),
        inpaint=InpaintSpec(mask_blur=0),
        controls=(unit(folder),),
    )
    with controlnet_calls() as seen:
        result = run(engine, request)[0]
    assert {call["sample"][1] for call in seen} == {4}
    assert result.image.size == (SIZE, SIZE)


def test_an_unknown_controlnet_is_refused_by_name(engine, folder) -> None:
    with pytest.raises(UserError, match="no ControlNet named 'lineart'"):
        run(engine, BASE, controls=(unit(folder, "lineart"),))


def test_an_engine_without_a_controlnet_library_refuses_units(folder) -> None:
    engine = Engine(
        ModelManager({"tiny": resolve_model("tiny")}, "tiny", choose_placement(device="cpu"))
    )
    with pytest.raises(UserError, match="no ControlNet library"):
        run(engine, BASE, controls=(unit(folder),))


def test_the_parameters_name_each_unit_with_a1111s_model_hash(engine, folder) -> None:
    import hashlib

    result = run(engine, BASE, controls=(unit(folder), unit(folder, "depth", 2, weight=0.5)))[0]
    hashes = []
    for name in ("canny", "depth"):
        data = (folder / f"{name}.safetensors").read_bytes()
        hashes.append(hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8])
    assert (
        f'ControlNet 0: "Module: canny, Model: canny [{hashes[0]}], Weight: 1.0,'
        in result.parameters
    )
    assert (
        f'ControlNet 1: "Module: canny, Model: depth [{hashes[1]}], Weight: 0.5,'
        in result.parameters
    )
