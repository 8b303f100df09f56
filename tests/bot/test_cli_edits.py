"""`dreamcord generate --init` edits on the tiny model: masks, outpaint, zoom out, pan, square.

Expected pixels are numpy slices of the input file and PIL's resize of it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli.edits import Edit, apply_edit
from bot.settings import load_settings
from pipeline.canvas import outpaint
from pipeline.request import GenerationRequest, Mode
from tests.bot.cli_helpers import dreamcord

TINY = ("--model", "tiny", "--steps", "3", "--seed", "5")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))


def write_picture(path: Path, width: int = 64, height: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs * 4 % 256, ys * 4 % 256, (xs + ys) * 2 % 256], axis=-1).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return pixels


def write_mask(path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (64, 64)):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    mask.save(path)


def edit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[np.ndarray, str, dict]:
    """Run one edit; its picture's pixels, its PNG parameters and the JSON report."""
    outcome = dreamcord(capsys, "generate", "a fox", *TINY, "--json", *args)
    assert outcome.code == 0, outcome.err
    report = json.loads(outcome.out)
    with Image.open(report["images"][0]["path"]) as png:
        return np.asarray(png.convert("RGB")), png.info["parameters"], report


def test_a_mask_repaints_only_its_white_part(capsys, tmp_path: Path) -> None:
    source = write_picture(tmp_path / "in.png")
    write_mask(tmp_path / "mask.png", (0, 0, 32, 64))
    pixels, parameters, report = edit(
        capsys, "--init", "in.png", "--mask", "mask.png", "--mask-blur", "0"
    )
    assert pixels.shape == (64, 64, 3)
    assert np.array_equal(pixels[:, 32:], source[:, 32:])
    assert not np.array_equal(pixels[:, :32], source[:, :32])
    assert report["params"]["mode"] == "inpaint"
    assert "Denoising strength: 0.75" in parameters
    assert "Mask blur" not in parameters  # A1111 writes it only when there is a blur
    assert list(tmp_path.glob("dreamcord-edit-*")) == []


def test_the_default_blur_and_a_fill_reach_the_parameters(capsys, tmp_path: Path) -> None:
    write_picture(tmp_path / "in.png")
    write_mask(tmp_path / "mask.png", (16, 16, 48, 48))
    _, parameters, report = edit(
        capsys, "--init", "in.png", "--mask", "mask.png", "--fill", "nothing", "--strength", "0.5"
    )
    assert "Denoising strength: 0.5, Mask blur: 4, Masked content: latent nothing" in parameters
    assert report["params"]["inpaint"]["fill"] == "latent nothing"


def test_outpaint_64_on_the_left_keeps_the_input_as_the_right_columns(
    capsys, tmp_path: Path
) -> None:
    source = write_picture(tmp_path / "in.png")
    pixels, parameters, report = edit(capsys, "--init", "in.png", "--outpaint", "64,0,0,0")
    assert pixels.shape == (64, 128, 3)
    assert np.array_equal(pixels[:, 64:], source)
    assert report["params"]["mode"] == "outpaint"
    assert "Size: 128x64" in parameters and "Denoising strength: 1" in parameters


def test_zoom_out_2_halves_the_input_into_the_centre_at_its_own_size(
    capsys, tmp_path: Path
) -> None:
    write_picture(tmp_path / "in.png")
    half = np.asarray(Image.open(tmp_path / "in.png").resize((32, 32), Image.Resampling.LANCZOS))
    pixels, _, _ = edit(capsys, "--init", "in.png", "--zoom-out", "2")
    assert pixels.shape == (64, 64, 3)
    assert np.array_equal(pixels[16:48, 16:48], half)


@pytest.mark.parametrize(
    ("args", "shape", "kept"),
    [
        (("--pan", "up"), (96, 64, 3), (slice(32, 96), slice(0, 64))),
        (("--square",), (64, 64, 3), (slice(16, 48), slice(0, 64))),
    ],
)
def test_pan_and_square_grow_the_canvas_around_the_input(
    capsys, tmp_path: Path, args: tuple[str, ...], shape: tuple[int, ...], kept: tuple
) -> None:
    height = 64 if args[0] == "--pan" else 32
    source = write_picture(tmp_path / "in.png", 64, height)
    pixels, _, _ = edit(capsys, "--init", "in.png", *args)
    assert pixels.shape == shape
    assert np.array_equal(pixels[kept], source)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--mask", "mask.png"), "--mask edits a picture: add --init IMAGE"),
        (("--mask-blur", "2"), "--mask-blur tunes an edit: add --mask MASK"),
        (("--init", "in.png", "--mask", "mask.png", "--pan", "left"), "use only one of --mask"),
        (("--init", "in.png", "--outpaint", "64,0"), "is not LEFT,RIGHT,TOP,BOTTOM"),
        (("--init", "in.png", "--outpaint", "0,0,0,0"), "at least one side"),
        (("--init", "in.png", "--zoom-out", "3"), "zoom factor 3 is out of range"),
        (("--init", "in.png", "--square"), "already square"),
        (("--init", "in.png", "--mask", "empty.png"), "the mask is empty: paint the part"),
        (("--init", "in.png", "--mask", "nowhere.png"), "does not exist"),
        (("--init", "in.png", "--mask", "mask.png", "--size", "64x64"), "drop --size"),
        (("--init", "in.png", "--pan", "left", "--mask-blur", "2"), "--mask-blur is for --mask"),
        (("--init", "in.png", "--mask", "mask.png", "--padding", "999"), "padding 999 is out"),
        (("--init", "in.png", "--mask", "mask.png", "--strength", "x"), "use a number from 0"),
        (("--init", "in.png", "--pan", "sideways"), "invalid choice: 'sideways'"),
    ],
)
def test_bad_edits_are_one_line(capsys, tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    write_picture(tmp_path / "in.png")
    write_mask(tmp_path / "mask.png", (0, 0, 8, 8))
    Image.new("L", (64, 64), 0).save(tmp_path / "empty.png")
    outcome = dreamcord(capsys, "generate", "a fox", "--model", "tiny", *args)
    assert outcome.code == 2
    assert says in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1
    assert list(tmp_path.glob("dreamcord-edit-*")) == []


def test_a_pan_past_the_pixel_limit_says_the_size_and_the_limit(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_PIXELS", str(96 * 96))
    monkeypatch.setenv("DEFAULT_SIZE", "96x96")
    write_picture(tmp_path / "in.png", 96, 96)
    outcome = dreamcord(
        capsys, "generate", "a fox", "--model", "tiny", "--init", "in.png", "--pan", "right"
    )
    assert outcome.code == 2
    assert "panning would make 144x96 (13,824 pixels); this server allows 9,216:" in outcome.err


def test_a_mask_of_another_size_is_stretched_with_a_note(capsys, tmp_path: Path) -> None:
    write_picture(tmp_path / "in.png")
    write_mask(tmp_path / "mask.png", (0, 0, 16, 32), (32, 32))
    outcome = dreamcord(
        capsys, "generate", "a fox", *TINY, "--init", "in.png", "--mask", "mask.png"
    )
    assert outcome.code == 0, outcome.err
    assert (
        "note: the mask is 32x32 but the picture is 64x64: it was stretched to fit" in outcome.err
    )


def test_an_edit_runs_on_the_models_inpainting_companion(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    models = tmp_path / "models"
    models.mkdir()
    for name, channels in (("dreamshaper", 4), ("dreamshaper-inpainting", 9)):
        conv_in = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, channels, 3, 3)}
        save_file(conv_in, str(models / f"{name}.safetensors"))
    settings = load_settings(None, model="tiny", models_dir=models)
    args = argparse.Namespace(
        model=None, mask_blur=None, inpaint_area=None, padding=None, fill=None
    )
    source = Image.new("RGB", (64, 64))
    request = GenerationRequest("a fox", model="dreamshaper")
    edited = apply_edit(
        request, Edit(outpaint(source, 8, 0, 0, 0), Mode.OUTPAINT), args, settings, tmp_path
    )
    assert edited.model == "dreamshaper-inpainting"
    assert (edited.width, edited.height, edited.mode) == (72, 64, Mode.OUTPAINT)
    assert Image.open(edited.mask_image).size == (72, 64)
    chosen = apply_edit(
        request,
        Edit(outpaint(source, 8, 0, 0, 0), Mode.OUTPAINT),
        argparse.Namespace(**{**vars(args), "model": "dreamshaper"}),
        settings,
        tmp_path,
    )
    assert chosen.model == "dreamshaper"
