"""ESRGAN-family upscaler models: layouts, scales, tiling, the catalog, and their engine use.

The models are tiny RRDBNets with random weights, written in the test by their published weight
names, so no binary is committed.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.engine import Engine
from pipeline.errors import UserError
from pipeline.infotext import parse_parameters
from pipeline.limits import Limits, check_request
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.pixel_upscalers import load_rrdbnet, upscale_image
from pipeline.png import png_bytes
from pipeline.request import HiresSpec, Mode
from pipeline.upscalers import MODEL_DENOISE, UpscalerCatalog, find_upscaler
from tests.pipeline.engine_helpers import SMALL, run

FEATURES, GROWTH = 8, 4


def basicsr_state(blocks: int = 1, in_channels: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random RRDBNet state dict by BasicSR/Real-ESRGAN's names (`RRDBNet_arch.py`)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"conv_first": (FEATURES, in_channels)}
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                out = FEATURES if conv == 5 else GROWTH
                shapes[f"body.{block}.rdb{rdb}.conv{conv}"] = (out, FEATURES + (conv - 1) * GROWTH)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (FEATURES, FEATURES)
    shapes["conv_last"] = (3, FEATURES)
    state = {}
    for name, (out, into) in shapes.items():
        state[f"{name}.weight"] = torch.randn(out, into, 3, 3, generator=generator) * 0.1
        state[f"{name}.bias"] = torch.randn(out, generator=generator) * 0.01
    state["conv_last.bias"] += 0.5  # mid-grey output, so that little is clamped away
    return state


def esrgan_state(state: dict[str, torch.Tensor], blocks: int = 1) -> dict[str, torch.Tensor]:
    """The same weights by the original ESRGAN's names (`model.0`, `model.1.sub.N.RDB1...`)."""
    old = {}
    for key, tensor in state.items():
        name, kind = key.rsplit(".", 1)
        if name.startswith("body."):
            _, block, rdb, conv = name.split(".")
            name = f"model.1.sub.{block}.RDB{rdb[-1]}.{conv}.0"
        else:
            name = {
                "conv_first": "model.0",
                "conv_body": f"model.1.sub.{blocks}",
                "conv_up1": "model.3",
                "conv_up2": "model.6",
                "conv_hr": "model.8",
                "conv_last": "model.10",
            }[name]
        old[f"{name}.{kind}"] = tensor
    return old


def install(folder: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file(state, path)
    return path


def gradient(size: int = 64) -> Image.Image:
    ramp = np.broadcast_to(np.linspace(0, 255, size).round().astype(np.uint8), (size, size))
    return Image.fromarray(np.stack([ramp, ramp.T, ramp[:, ::-1]], -1), "RGB")


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_installed_models_are_found_by_file_name_in_any_case(tmp_path: Path) -> None:
    path = install(tmp_path, "4x-UltraSharp", basicsr_state())
    (tmp_path / "notes.txt").write_text("not a model")
    catalog = UpscalerCatalog(tmp_path)
    found = find_upscaler("4X-ULTRASHARP", catalog)
    assert (found.name, found.model_file, found.default_denoise) == (
        "4x-UltraSharp",
        path,
        MODEL_DENOISE,
    )
    assert catalog.names()[-1] == "4x-UltraSharp"
    assert catalog.find("lanczos").model_file is None
    with pytest.raises(UserError, match=r"use one of .*Lanczos, 4x-UltraSharp$"):
        catalog.find("8x-Missing")
    with pytest.raises(UserError, match="unknown upscaler '4x-UltraSharp'"):
        find_upscaler("4x-UltraSharp")


@pytest.mark.parametrize(("in_channels", "scale"), [(3, 4), (12, 2), (48, 1)])
def test_basicsr_models_upscale_by_their_own_scale(
    tmp_path: Path, in_channels: int, scale: int
) -> None:
    net = load_rrdbnet(install(tmp_path, "model", basicsr_state(in_channels=in_channels)))
    assert net.scale == scale
    assert upscale_image(net, gradient()).size == (64 * scale, 64 * scale)
    # Odd sides are padded for the pixel unshuffle, then cropped back.
    assert upscale_image(net, gradient().crop((0, 0, 61, 63))).size == (61 * scale, 63 * scale)


def test_the_original_esrgan_layout_loads_as_the_same_network(tmp_path: Path) -> None:
    state = basicsr_state(blocks=2)
    new = load_rrdbnet(install(tmp_path, "new", state))
    old = load_rrdbnet(install(tmp_path, "old", esrgan_state(state, blocks=2)))
    assert (old.shape.blocks, old.shape.features, old.shape.growth) == (2, FEATURES, GROWTH)
    image = gradient(32)
    assert upscale_image(old, image).tobytes() == upscale_image(new, image).tobytes()


def test_tiled_output_matches_one_pass_over_the_whole_image(tmp_path: Path) -> None:
    net = load_rrdbnet(install(tmp_path, "4x", basicsr_state()))
    whole = upscale_image(net, gradient(), tile=64, pad=0)
    tiled = upscale_image(net, gradient(), tile=16, pad=20)
    assert tiled.size == whole.size == (256, 256)
    assert int(np.abs(as_array(tiled) - as_array(whole)).max()) <= 1


def _truncated(path: Path) -> None:
    save_file(basicsr_state(), path)
    path.write_bytes(path.read_bytes()[:2000])


def _pickled(path: Path) -> None:
    torch.save(basicsr_state(), path)


def _bare_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"conv_first.weight": [0.0]}))


def _unknown_layout(path: Path) -> None:
    save_file({"encoder.weight": torch.zeros(4, 4)}, path)


def _extra_key(path: Path) -> None:
    save_file({**basicsr_state(), "attention.weight": torch.zeros(2)}, path)


def _wrong_shape(path: Path) -> None:
    state = basicsr_state()
    state["conv_hr.weight"] = torch.zeros(FEATURES, FEATURES, 1, 1)
    save_file(state, path)


def _not_finite(path: Path) -> None:
    state = basicsr_state()
    state["conv_last.bias"][0] = float("nan")
    save_file(state, path)


def _rgba_input(path: Path) -> None:
    save_file(basicsr_state(in_channels=4), path)


@pytest.mark.parametrize(
    ("write", "says"),
    [
        (_truncated, "not a readable .safetensors file"),
        (_pickled, "PyTorch pickle .* pickles are never loaded"),
        (_bare_pickle, "PyTorch pickle"),
        (_unknown_layout, "no conv_first"),
        (_extra_key, r"unknown \['attention.weight'\]"),
        (_wrong_shape, r"conv_hr.weight has shape \(8, 8, 1, 1\), expected \(8, 8, 3, 3\)"),
        (_not_finite, "conv_last.bias holds non-finite"),
        (_rgba_input, "4 input channels"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_files_that_are_not_rrdbnets_are_refused_with_the_reason(
    tmp_path: Path, write: object, says: str
) -> None:
    path = tmp_path / "bad.safetensors"
    write(path)  # type: ignore[operator]
    with pytest.raises(UserError, match=f"upscaler bad.safetensors cannot be used: .*{says}"):
        load_rrdbnet(path)


def test_old_layouts_other_than_4x_are_refused(tmp_path: Path) -> None:
    state = esrgan_state(basicsr_state())
    state["model.5.weight"] = state.pop("model.6.weight")
    with pytest.raises(UserError, match=r"unexpected weight 'model\.5\.weight'"):
        load_rrdbnet(install(tmp_path, "2x-old", state))


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory: pytest.TempPathFactory) -> UpscalerCatalog:
    folder = tmp_path_factory.mktemp("upscalers")
    install(folder, "2x-Tiny", basicsr_state(in_channels=12))
    install(folder, "4x-Tiny", esrgan_state(basicsr_state()))
    return UpscalerCatalog(folder)


@pytest.fixture(scope="module")
def engine(upscalers: UpscalerCatalog) -> Engine:
    models = ModelManager({"tiny": resolve_model("tiny")}, "tiny", choose_placement(device="cpu"))
    return Engine(models, upscalers=upscalers)


def test_hires_fix_through_an_installed_model_reaches_the_target_size(
    engine: Engine, upscalers: UpscalerCatalog
) -> None:
    request = replace(SMALL, hires=HiresSpec(scale=1.5, steps=2, denoise=0.35, upscaler="4x-tiny"))
    request = check_request(request, Limits(upscalers=upscalers))
    assert request.hires is not None and request.hires.upscaler == "4x-Tiny"
    result = run(engine, request)[0]
    assert result.image.size == (96, 96)
    assert parse_parameters(result.parameters)[2]["Hires upscaler"] == "4x-Tiny"


def test_the_upscale_mode_enlarges_with_the_first_installed_model(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.pixel_upscalers

    source = run(engine, SMALL)[0]
    init = tmp_path / "init.png"
    init.write_bytes(png_bytes(source.image, source.parameters))
    seen: list[tuple[int, tuple[int, int]]] = []
    original = pipeline.pixel_upscalers.upscale_image

    def spy(net: torch.nn.Module, image: Image.Image) -> Image.Image:
        seen.append((net.scale, image.size))  # type: ignore[attr-defined]
        return original(net, image)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.pixel_upscalers, "upscale_image", spy)
    upscale = dict(mode=Mode.UPSCALE, init_image=str(init), strength=0.3, width=128, height=128)
    result = run(engine, SMALL, **upscale)[0]
    assert result.image.size == (128, 128)
    assert seen == [(2, (64, 64))]  # 2x-Tiny sorts before 4x-Tiny
