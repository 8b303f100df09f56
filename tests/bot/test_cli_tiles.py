"""`dreamcord generate --upscale IMAGE --mode/--tile/--overlap`: tiled upscales from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bot.cli_helpers import dreamcord
from tests.control_files import tiny_controlnet, write_diffusers_layout

TINY = ("--model", "tiny", "--steps", "2", "--size", "64x64")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))


def _source(capsys: pytest.CaptureFixture[str], size: str = "64x64") -> str:
    args = ("a fox", *TINY, "--size", size, "--seed", "3", "--out", "src", "--json")
    outcome = dreamcord(capsys, "generate", *args)
    assert outcome.code == 0, outcome.err
    return str(json.loads(outcome.out)["images"][0]["path"])


def test_a_creative_tiled_upscale_doubles_the_picture_with_a_bar_in_tiles(capsys) -> None:
    source = _source(capsys)
    args = ("--upscale", source, "--mode", "creative", "--tile", "256", "--overlap", "32")
    outcome = dreamcord(capsys, "generate", *args, "--model", "tiny", "--json", "--out", "up")
    assert outcome.code == 0, outcome.err
    report = json.loads(outcome.out)
    image = report["images"][0]
    assert (image["width"], image["height"]) == (128, 128)
    assert report["params"]["tiles"] == {"size": 256, "overlap": 32, "batch": 4}
    assert report["params"]["strength"] == 0.45  # Creative
    assert "tile/s" in outcome.err or "s/tile" in outcome.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--tile", "300"), "tile size 300 is not allowed: use a multiple of 64 from 256 up"),
        (("--tile", "256", "--overlap", "128"), "overlap 128 is not allowed"),
        (("--mode", "subtle"), "limit of 262,144 pixels: the largest allowed is 512x512"),
    ],
)
def test_bad_tiles_are_one_line_and_nothing_runs(
    capsys, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], says: str
) -> None:
    source = _source(capsys, "256x256")
    monkeypatch.setenv("MAX_UPSCALE_PIXELS", str(512 * 512))
    upscaled = ("--upscale", source, "--factor", "4")  # 1024x1024: over the limit
    outcome = dreamcord(capsys, "generate", *upscaled, *args, "--model", "tiny")
    assert outcome.code == 2
    assert says in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1
    assert not Path("out").exists()


def _add_controlnet(capsys: pytest.CaptureFixture[str], name: str, kind: str, seed: int) -> None:
    path = write_diffusers_layout(Path(f"{name}.safetensors"), tiny_controlnet(seed))
    outcome = dreamcord(capsys, "controlnet", "add", str(path), "--name", name, "--type", kind)
    assert outcome.code == 0, outcome.err


def _tiled_controls(capsys: pytest.CaptureFixture[str], source: str) -> list[dict]:
    args = ("--upscale", source, "--mode", "subtle", "--tile", "256", "--json", "--out", "up")
    outcome = dreamcord(capsys, "generate", *args, "--model", "tiny")
    assert outcome.code == 0, outcome.err
    return list(json.loads(outcome.out)["params"]["controls"])


def test_the_tiled_upscale_is_guided_by_the_first_enabled_tile_controlnet(
    capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL", "tiny")  # the library takes ControlNets of the tiny's width
    source = _source(capsys)
    _add_controlnet(capsys, "edges", "canny", 1)
    assert _tiled_controls(capsys, source) == [], "no tile model: no unit"
    for seed, name in enumerate(("b-tile", "a-tile"), start=2):
        _add_controlnet(capsys, name, "tile", seed)
    image = str(Path(source).resolve())  # the source picture itself is the map
    unit = {"model": "a-tile", "image": image, "weight": 1.0, "start": 0.0, "end": 1.0}
    assert _tiled_controls(capsys, source) == [{**unit, "preprocessor": "none"}]
    assert dreamcord(capsys, "controlnet", "disable", "a-tile").code == 0
    assert _tiled_controls(capsys, source)[0]["model"] == "b-tile"
