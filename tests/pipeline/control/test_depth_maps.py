"""The depth preprocessor: a transformers depth model in DATA_DIR/annotators/depth.

The reference is the same folder run through transformers' own `pipeline("depth-estimation")`
(its `predicted_depth`, resized to the picture by the model's processor), normalised as
sd-webui-controlnet's annotator/midas does: `depth -= min; depth /= max;
(depth * 255).clip(0, 255).astype(uint8)`, near (the largest inverse depth) white.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import pipeline

from pipeline.control.annotators import Annotators
from pipeline.control.preprocess import control_map, crop_and_resize
from pipeline.errors import UserError
from pipeline.limits import check_controls
from pipeline.request import ControlUnit, GenerationRequest
from tests.depth_files import tiny_depth_model, write_depth_folder


def _photo(size: tuple[int, int] = (120, 80), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    xs = np.mgrid[0 : size[1], 0 : size[0]][1]
    ramp = (xs * 255 // size[0]).astype(np.uint8)
    noise = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    return Image.fromarray(np.stack([ramp, noise, 255 - ramp], -1), "RGB")


def a1111_depth_midas(depth: torch.Tensor) -> np.ndarray:
    """annotator/midas's normalisation of a model's relative inverse depth, 3 channels."""
    depth_pt = depth.clone()
    depth_pt -= torch.min(depth_pt)
    depth_pt /= torch.max(depth_pt)
    grey = (depth_pt.numpy() * 255.0).clip(0, 255).astype(np.uint8)
    return np.stack([grey] * 3, axis=-1)


def reference(folder: Path, picture: Image.Image, width: int, height: int) -> np.ndarray:
    estimator = pipeline("depth-estimation", model=str(folder))
    return a1111_depth_midas(estimator(crop_and_resize(picture, width, height))["predicted_depth"])


@pytest.mark.parametrize("kind", ["dpt", "depth_anything"])
def test_the_depth_map_is_transformers_depth_normalised_as_a1111s_depth_midas(
    tmp_path: Path, kind: str
) -> None:
    folder = write_depth_folder(tmp_path / "annotators" / "depth", kind)
    picture = _photo()
    made = np.asarray(control_map(picture, "depth", 64, 48, Annotators(tmp_path / "annotators")))
    expected = reference(folder, picture, 64, 48)
    assert made.shape == (48, 64, 3)
    assert expected.min() == 0 and expected.max() == 255  # a real spread, not a flat map
    assert np.array_equal(made, expected)


def test_the_model_is_loaded_once_and_reloaded_when_its_weights_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_depth_folder(tmp_path / "depth")
    loads = []
    load = transformers.AutoModelForDepthEstimation.from_pretrained

    def counted(*args: object, **kwargs: object) -> object:
        loads.append(args[0])
        return load(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForDepthEstimation, "from_pretrained", counted)
    annotators = Annotators(tmp_path)
    first = np.asarray(control_map(_photo(), "depth", 64, 48, annotators))
    assert np.array_equal(np.asarray(control_map(_photo(), "depth", 64, 48, annotators)), first)
    assert len(loads) == 1
    tiny_depth_model("dpt", seed=7).save_pretrained(folder, safe_serialization=True)
    second = np.asarray(control_map(_photo(), "depth", 64, 48, annotators))
    assert len(loads) == 2 and not np.array_equal(second, first)


def test_a_missing_depth_model_says_where_to_put_it_or_to_send_a_ready_map(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError) as caught:
        control_map(_photo(), "depth", 64, 48, Annotators(tmp_path / "annotators"))
    text = str(caught.value)
    assert f"needs a depth model in {tmp_path / 'annotators' / 'depth'}" in text
    assert (
        "Intel/dpt-hybrid-midas" in text and "send a ready depth map with preprocess none" in text
    )


def test_a_depth_folder_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    folder = write_depth_folder(tmp_path / "depth")
    model = tiny_depth_model("dpt")
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"no \.safetensors weights: only safetensors are loaded"):
        control_map(_photo(), "depth", 64, 48, Annotators(tmp_path))


def test_a_metric_depth_model_is_refused_for_its_far_is_bright_maps(tmp_path: Path) -> None:
    folder = write_depth_folder(tmp_path / "depth")
    (folder / "config.json").write_text('{"model_type": "zoedepth"}')
    with pytest.raises(UserError, match=r"is a 'zoedepth' model: use a DPT/MiDaS or Depth"):
        control_map(_photo(), "depth", 64, 48, Annotators(tmp_path))


def test_the_limits_accept_a_depth_unit() -> None:
    unit = ControlUnit(model="depth-v11", image="map.png", preprocessor="depth")
    check_controls(replace(GenerationRequest(prompt="a house"), controls=(unit,)))
