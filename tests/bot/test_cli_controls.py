"""`dreamcord generate --control NAME --control-image IMAGE ...` on the tiny model.

The units parse in order, follow the bot's rules, and `--control-map-out` writes the map: for a
canny model, OpenCV's `Canny(100, 200)` applied directly (as A1111's annotator does) to the
picture fitted by A1111's "Crop and Resize".
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bot.cli import build_parser
from pipeline.control.preprocess import crop_and_resize
from tests.bot.cli_helpers import dreamcord
from tests.control_files import tiny_controlnet, write_diffusers_layout
from tests.depth_files import write_depth_folder
from tests.pipeline.control.test_depth_maps import reference

TINY = ("--model", "tiny", "--steps", "2", "--seed", "5")
SIZED = (*TINY, "--size", "64x48")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir and a temp folder of the test's own, to see that no scratch file stays."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")  # the library takes ControlNets of the tiny's width
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def write_photo(path: Path, size: tuple[int, int] = (120, 80)) -> Path:
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    stripes = ((xs // 7) % 2 * 230).astype(np.uint8)
    rings = ((np.hypot(xs - size[0] / 2, ys - size[1] / 2) // 9) % 2 * 120).astype(np.uint8)
    Image.fromarray(np.stack([stripes, rings, 255 - stripes], -1), "RGB").save(path)
    return path


def canny_of(path: Path, width: int, height: int) -> np.ndarray:
    with Image.open(path) as picture:
        return cv2.Canny(np.asarray(crop_and_resize(picture, width, height)), 100, 200)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture
def controlnets(capsys, tmp_path: Path) -> None:
    """A canny and a depth ControlNet added with the library's own command."""
    for seed, name in enumerate(("tiny-canny", "tiny-depth")):
        path = write_diffusers_layout(tmp_path / f"{name}.safetensors", tiny_controlnet(seed))
        outcome = dreamcord(capsys, "controlnet", "add", str(path), "--name", name)
        assert outcome.code == 0, outcome.err


def parsed(*flags: str) -> list[dict]:
    return build_parser().parse_args(["generate", "a house", *flags]).controls


def test_each_control_starts_a_unit_and_the_options_after_it_apply_to_it() -> None:
    assert parsed(
        "--control", "a", "--control-image", "a.png", "--control-weight", "0.5",
        "--control", "b", "--preprocess", "invert", "--control-image", "b.png",
        "--control-start", "0.2", "--control-end", "0.8",
    ) == [
        {"model": "a", "picture": Path("a.png"), "weight": 0.5},
        {"model": "b", "preprocessor": "invert", "picture": Path("b.png"),
         "start": 0.2, "end": 0.8},
    ]  # fmt: skip


def test_options_before_the_first_control_belong_to_the_unit_it_names() -> None:
    assert parsed("--control-image", "a.png", "--control", "a") == [
        {"picture": Path("a.png"), "model": "a"}
    ]
    assert parsed("--control-image", "a.png") == [{"picture": Path("a.png")}]
    assert build_parser().parse_args(["generate", "a house"]).controls is None


def test_an_option_given_twice_for_one_unit_is_a_usage_error(capsys) -> None:
    outcome = dreamcord(
        capsys, "generate", "a", "--control", "a", "--control-weight", "1", "--control-weight", "2"
    )
    assert outcome.code == 2
    assert outcome.err.count("\n") == 1
    assert "--control-weight is given twice for ControlNet unit 1" in outcome.err


def test_control_map_out_writes_opencvs_canny_of_the_picture_at_the_request_size(
    capsys, tmp_path: Path, controlnets, isolated: Path
) -> None:
    photo = write_photo(tmp_path / "house.png")
    outcome = dreamcord(
        capsys, "generate", "a house", *SIZED, "--json",
        "--control", "tiny-canny", "--control-image", str(photo), "--control-weight", "0.6",
        "--control-map-out", "map.png",
    )  # fmt: skip
    assert outcome.code == 0, outcome.err
    expected = canny_of(photo, 64, 48)
    written = pixels(tmp_path / "map.png")
    assert written.shape == (48, 64, 3) and expected.any()
    assert np.array_equal(written[..., 0], expected) and np.array_equal(written[..., 1], expected)
    report = json.loads(outcome.out)
    assert report["controls"] == [
        {
            "model": "tiny-canny",
            "weight": 0.6,
            "start": 0.0,
            "end": 1.0,
            "preprocessor": "canny",
            "image": None,
            "map": "map.png",
        }
    ]
    assert report["params"]["controls"][0]["model"] == "tiny-canny"
    assert not list(isolated.glob("dreamcord-*")), "the run's scratch folder is gone"


def test_three_units_write_three_maps_and_a_fourth_is_refused(
    capsys, tmp_path: Path, controlnets
) -> None:
    photo = write_photo(tmp_path / "house.png")
    unit = ("--control-image", str(photo))
    outcome = dreamcord(
        capsys, "generate", "a house", *SIZED,
        "--control", "tiny-canny", *unit,
        "--control", "tiny-depth", *unit,
        "--control", "tiny-depth", *unit, "--preprocess", "invert",
        "--control-map-out", "out/map.png",
    )  # fmt: skip
    assert outcome.code == 0, outcome.err
    fitted = np.asarray(crop_and_resize(Image.open(photo), 64, 48))
    assert np.array_equal(pixels(tmp_path / "out/map.png")[..., 0], canny_of(photo, 64, 48))
    assert np.array_equal(pixels(tmp_path / "out/map-2.png"), fitted)
    assert np.array_equal(pixels(tmp_path / "out/map-3.png"), 255 - fitted)

    four = dreamcord(
        capsys, "generate", "a house", *TINY, *(("--control", "tiny-depth", *unit) * 4)
    )
    assert four.code != 0 and four.err.count("\n") == 1
    assert "4 ControlNet units asked for: use at most 3" in four.err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--control", "tiny-canny", "--control-image", "missing.png"), "does not exist"),
        (("--control", "tiny-canny", "--control-image", "notes.png"), "not a picture"),
        (("--control", "tiny-canny"), "has no control image"),
        (("--control-image", "house.png"), "a control image needs a ControlNet model"),
        (("--control", "tiny-cany", "--control-image", "house.png"), "did you mean 'tiny-canny'"),
        (("--control", "tiny-canny", "--control-image", "house.png", "--control-weight", "3"),
         "weight 3 is out of range: use 0 to 2"),
        (("--control", "tiny-canny", "--control-image", "house.png", "--control-start", "0.6",
          "--control-end", "0.4"), "the start before the end"),
        (("--control-map-out", "map.png"), "--control-map-out saves a ControlNet map"),
        (("--control", "tiny-canny", "--control-image", "house.png", "--init", "house.png",
          "--square"), "--control does not go with --square"),
    ],
)  # fmt: skip
def test_bad_control_input_is_one_line_on_stderr_and_a_failure(
    capsys, tmp_path: Path, controlnets, isolated: Path, flags: tuple[str, ...], says: str
) -> None:
    write_photo(tmp_path / "house.png")
    (tmp_path / "notes.png").write_text("not a picture")
    outcome = dreamcord(capsys, "generate", "a house", *TINY, *flags)
    assert outcome.code != 0
    assert outcome.err.count("\n") == 1 and says in outcome.err, outcome.err
    assert not (tmp_path / "map.png").exists() and not (tmp_path / "out").exists()
    assert not list(isolated.glob("dreamcord-*")), "no scratch folder stays"


def test_control_map_out_writes_the_depth_map_of_the_annotators_model(
    capsys, tmp_path: Path, controlnets
) -> None:
    folder = write_depth_folder(tmp_path / "data" / "annotators" / "depth")
    photo = write_photo(tmp_path / "house.png")
    outcome = dreamcord(
        capsys, "generate", "a house", *SIZED,
        "--control", "tiny-depth", "--preprocess", "depth", "--control-image", str(photo),
        "--control-map-out", "depth.png",
    )  # fmt: skip
    assert outcome.code == 0, outcome.err
    with Image.open(photo) as picture:
        expected = reference(folder, picture, 64, 48)
    assert np.array_equal(pixels(tmp_path / "depth.png"), expected)


def test_depth_without_its_model_is_one_line_and_nothing_runs(
    capsys, tmp_path: Path, controlnets
) -> None:
    photo = write_photo(tmp_path / "house.png")
    outcome = dreamcord(
        capsys, "generate", "a house", *TINY,
        "--control", "tiny-depth", "--preprocess", "depth", "--control-image", str(photo),
        "--control-map-out", "depth.png",
    )  # fmt: skip
    assert outcome.code != 0 and outcome.err.count("\n") == 1, outcome.err
    assert "or send a ready depth map with preprocess none" in outcome.err
    assert not (tmp_path / "depth.png").exists() and not (tmp_path / "out").exists()
