"""Masked passes on the tiny model and on `tiny-inpainting` (a 9-channel UNet built from config).

Expected pixels are the input's own bytes (numpy slices of the PNG written here) and PIL's
resize of it; the kept latents are the VAE's encoding of the input, not the engine's numbers.
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
from pipeline.canvas import Canvas, outpaint, zoom_out
from pipeline.engine import Engine, encode_image
from pipeline.errors import UserError
from pipeline.limits import Limits, check_request
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.request import GenerationRequest, InpaintSpec, Mode
from tests.pipeline.engine_helpers import record_decodes

SIZE = 64


@pytest.fixture(scope="module")
def engine() -> Engine:
    sources = {name: resolve_model(name) for name in ("tiny", "tiny-inpainting")}
    return Engine(ModelManager(sources, "tiny", choose_placement(device="cpu")))


def picture(seed: int, width: int = SIZE, height: int = SIZE) -> Image.Image:
    """A smooth picture (a gradient plus a little noise), closer to a photo than pure noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) * 127 / width], axis=-1)
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def box_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def edit_request(
    folder: Path, name: str, image: Image.Image, mask: Image.Image, **changes: Any
) -> GenerationRequest:
    """A checked edit of `image` through `mask`, both stored as PNG files in `folder`."""
    image_path, mask_path = folder / f"{name}.png", folder / f"{name}-mask.png"
    image.save(image_path)
    mask.save(mask_path)
    request = GenerationRequest(
        "a red fox in the snow",
        width=image.width,
        height=image.height,
        steps=4,
        seed=7,
        mode=Mode.INPAINT,
        strength=0.75,
        init_image=str(image_path),
        mask_image=str(mask_path),
        inpaint=InpaintSpec(mask_blur=0),
    )
    return check_request(replace(request, **changes), Limits())


def run_batch(engine: Engine, *requests: GenerationRequest) -> list[np.ndarray]:
    tasks = [ImageTask(f"job{i}", 0, request) for i, request in enumerate(requests)]
    results = engine.run(tasks, lambda *_: None, lambda: False)
    return [np.asarray(result.image) for result in results]


def run_recording_unet_inputs(
    engine: Engine, model: str, request: GenerationRequest
) -> tuple[np.ndarray, set[tuple[int, ...]]]:
    """The one image of `request`, and the shapes of every UNet input that made it."""
    unet = engine.models.get(model).pipe.unet
    shapes: set[tuple[int, ...]] = set()
    handle = unet.register_forward_pre_hook(lambda _m, args: shapes.add(tuple(args[0].shape)))
    try:
        return run_batch(engine, request)[0], shapes
    finally:
        handle.remove()


def test_pixels_outside_the_mask_keep_their_exact_bytes(engine: Engine, tmp_path: Path) -> None:
    source = picture(1)
    request = edit_request(tmp_path, "fox", source, box_mask((16, 16, 48, 48)))
    result = run_batch(engine, request)[0]
    expected, outside = np.asarray(source), np.ones((SIZE, SIZE), bool)
    outside[16:48, 16:48] = False
    assert result.shape == expected.shape
    assert np.array_equal(result[outside], expected[outside])
    assert not np.array_equal(result[16:48, 16:48], expected[16:48, 16:48])


def test_a_blurred_mask_changes_only_pixels_it_reaches(engine: Engine, tmp_path: Path) -> None:
    """A Gaussian of standard deviation 4 is below 1/255 past 3.5 deviations (14 pixels)."""
    source = picture(2)
    mask = box_mask((24, 24, 40, 40))
    request = edit_request(tmp_path, "blur", source, mask, inpaint=InpaintSpec(mask_blur=4))
    result = run_batch(engine, request)[0]
    far = np.ones((SIZE, SIZE), bool)
    far[24 - 14 : 40 + 14, 24 - 14 : 40 + 14] = False
    assert np.array_equal(result[far], np.asarray(source)[far])
    # A1111's overlay is the blurred mask doubled: pixels just outside the mask do change.
    assert not np.array_equal(result[20:24, 24:40], np.asarray(source)[20:24, 24:40])


def test_two_edits_in_one_batch_each_keep_their_own_picture_outside_their_own_mask(
    engine: Engine, tmp_path: Path
) -> None:
    left, right = picture(3), picture(4)
    one = edit_request(tmp_path, "a", left, box_mask((0, 0, 32, SIZE)))
    two = edit_request(tmp_path, "b", right, box_mask((32, 0, SIZE, SIZE)), seed=9)
    from pipeline.planner import batch_key

    assert batch_key(one) == batch_key(two)
    first, second = run_batch(engine, one, two)
    assert np.array_equal(first[:, 32:], np.asarray(left)[:, 32:])
    assert np.array_equal(second[:, :32], np.asarray(right)[:, :32])
    assert not np.array_equal(first[:, :32], np.asarray(left)[:, :32])
    assert not np.array_equal(second[:, 32:], np.asarray(right)[:, 32:])


@pytest.mark.parametrize(
    "sampler", ["Euler", "Euler a", "DPM++ 2M", "Heun", "DPM++ 2S a", "DPM++ SDE", "UniPC", "LCM"]
)
def test_the_kept_latents_end_as_the_pictures_own_for_every_kind_of_sampler(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampler: str
) -> None:
    """Each sampler denoises as x - sigma x eps; bent so that the denoised latents outside the
    mask are the picture's, the last step (to sigma 0) leaves exactly those latents there."""
    source = picture(5)
    request = edit_request(tmp_path, "k", source, box_mask((0, 0, 32, SIZE)), sampler=sampler)
    decoded = record_decodes(engine, monkeypatch)
    run_batch(engine, request)
    vae = engine.models.get("tiny").pipe.vae
    with torch.inference_mode():
        expected = encode_image(vae, source)[0]
    final = decoded[-1][0]
    assert torch.allclose(final[:, :, 4:], expected[:, :, 4:], atol=1e-3)
    assert not torch.allclose(final[:, :, :4], expected[:, :, :4], atol=1e-1)


def test_an_inpainting_unet_reads_nine_channels_and_keeps_the_outside(
    engine: Engine, tmp_path: Path
) -> None:
    source = picture(6)
    request = edit_request(
        tmp_path, "nine", source, box_mask((0, 32, SIZE, SIZE)), model="tiny-inpainting"
    )
    result, shapes = run_recording_unet_inputs(engine, "tiny-inpainting", request)
    assert shapes == {(2, 9, SIZE // 8, SIZE // 8)}  # prompt and negative
    assert np.array_equal(result[:32], np.asarray(source)[:32])


def test_the_nine_channels_hold_the_latent_mask_and_the_masked_pictures_latents(
    engine: Engine, tmp_path: Path
) -> None:
    source = picture(7)
    request = edit_request(
        tmp_path, "extra", source, box_mask((0, 32, SIZE, SIZE)), model="tiny-inpainting"
    )
    model = engine.models.get("tiny-inpainting")
    inputs: list[torch.Tensor] = []
    handle = model.pipe.unet.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    try:
        run_batch(engine, request)
    finally:
        handle.remove()
    extra = inputs[0][0, 4:]
    expected_mask = torch.zeros(SIZE // 8, SIZE // 8)
    expected_mask[4:] = 1
    assert torch.equal(extra[0], expected_mask)
    grey_below = np.asarray(source).copy()
    grey_below[32:] = 0
    masked = torch.from_numpy(grey_below.astype(np.float32) / 127.5 - 1)
    masked[32:] = 0  # the masked part is 0 in the VAE's -1..1 range
    vae = model.pipe.vae
    with torch.inference_mode():
        latents = vae.encode(masked.permute(2, 0, 1)[None]).latent_dist.mean
    assert torch.allclose(extra[1:], latents[0] * vae.config.scaling_factor, atol=1e-4)


def test_an_inpainting_model_refuses_a_job_without_a_mask(engine: Engine) -> None:
    request = GenerationRequest("a fox", width=SIZE, height=SIZE, steps=2, model="tiny-inpainting")
    with pytest.raises(UserError, match=r"tiny-inpainting is an SD1\.5 inpainting checkpoint"):
        engine.run([ImageTask("j", 0, request)], lambda *_: None, lambda: False)


def test_outpaint_left_64_keeps_the_input_as_the_right_64_columns(
    engine: Engine, tmp_path: Path
) -> None:
    source = picture(8)
    canvas = outpaint(source, 64, 0, 0, 0)
    request = _canvas_request(tmp_path, canvas)
    result = run_batch(engine, request)[0]
    assert result.shape == (64, 128, 3)
    assert np.array_equal(result[:, 64:], np.asarray(source))


def test_zoom_out_2_keeps_the_input_halved_in_the_centre(engine: Engine, tmp_path: Path) -> None:
    source = picture(9)
    request = _canvas_request(tmp_path, zoom_out(source, 2.0))
    result = run_batch(engine, request)[0]
    half = np.asarray(source.resize((32, 32), Image.Resampling.LANCZOS))
    assert result.shape == (SIZE, SIZE, 3)
    assert np.array_equal(result[16:48, 16:48], half)
    assert not np.array_equal(result[:16], np.asarray(_stretched_edges(tmp_path))[:16])


def _canvas_request(folder: Path, canvas: Canvas) -> GenerationRequest:
    # The default mask treatment: check_request takes an outpaint's blur away.
    return edit_request(
        folder, "canvas", canvas.image, canvas.mask, mode=Mode.OUTPAINT, strength=1.0, inpaint=None
    )


def _stretched_edges(folder: Path) -> Image.Image:
    """The canvas the last outpaint started from, as stored."""
    return Image.open(folder / "canvas.png").convert("RGB")


@pytest.mark.parametrize("fill", ["latent noise", "latent nothing"])
def test_a_fill_changes_what_the_mask_starts_from_and_nothing_else(
    engine: Engine, tmp_path: Path, fill: str
) -> None:
    source = picture(10)
    mask = box_mask((16, 16, 48, 48))
    original = run_batch(engine, edit_request(tmp_path, "o", source, mask))[0]
    filled = run_batch(
        engine, edit_request(tmp_path, "f", source, mask, inpaint=InpaintSpec(0, fill=fill))
    )[0]
    assert np.array_equal(filled[:16], original[:16])
    assert not np.array_equal(filled[16:48, 16:48], original[16:48, 16:48])


@pytest.mark.slow
def test_only_masked_works_on_the_crop_at_the_models_size_and_pastes_it_back(
    engine: Engine, tmp_path: Path
) -> None:
    source = picture(11)
    spec = InpaintSpec(mask_blur=0, area="masked", padding=8)
    request = edit_request(tmp_path, "crop", source, box_mask((40, 40, 56, 56)), inpaint=spec)
    result, shapes = run_recording_unet_inputs(engine, "tiny", request)
    assert shapes == {(2, 4, 64, 64)}  # 512x512, SD1.5's own size, at the 1:1 aspect
    outside = np.ones((SIZE, SIZE), bool)
    outside[40:56, 40:56] = False
    assert result.shape == (SIZE, SIZE, 3)
    assert np.array_equal(result[outside], np.asarray(source)[outside])
    assert not np.array_equal(result[40:56, 40:56], np.asarray(source)[40:56, 40:56])
