"""`dreamcord generate --parameters`: a pasted recipe, its notes, overrides and the round trip."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bot.cli_helpers import dreamcord
from tests.bot.library_files import write_lora

SMALL = ("--steps", "3", "--size", "64x64")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")


def generate(capsys, *args: str) -> dict:
    outcome = dreamcord(capsys, "generate", *args, "--json")
    assert outcome.code == 0, outcome.err
    return json.loads(outcome.out)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_a_dreamcord_png_pasted_back_gives_the_same_pixels(capsys, tmp_path: Path) -> None:
    # Any CLI generation works; one from a recipe is the only one with a variation seed and
    # a batch of one (a batch of another size can move a few pixels by one level on the CPU).
    recipe = tmp_path / "first.txt"
    recipe.write_text(
        "a fox, (detailed fur:1.2)\nNegative prompt: blurry\n"
        "Steps: 3, Sampler: Euler a, CFG scale: 6, Seed: 11, Size: 64x64, Variation seed: 5, "
        "Variation seed strength: 0.3, Clip skip: 2, RNG: CPU, Denoising strength: 0.6, "
        "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent",
        encoding="utf-8",
    )
    first = generate(capsys, "--parameters", str(recipe), "--out", "first")
    image = first["images"][0]
    assert (image["seed"], image["variation_seed"], image["width"]) == (11, 5, 96)
    again = generate(capsys, "--parameters", image["path"], "--out", "again")
    assert again["notes"] == []
    assert again["params"] == {**first["params"], "model": "tiny"}  # the PNG says Model: tiny
    assert np.array_equal(pixels(again["images"][0]["path"]), pixels(image["path"]))
    assert Image.open(again["images"][0]["path"]).info == Image.open(image["path"]).info


def civitai_recipe(addnet: str) -> str:
    """An infotext as A1111 1.10 writes it (Civitai style), at a size the tiny model draws fast."""
    return (
        "masterpiece, best quality, 1girl, <lora:add_detail:0.5>\n"
        "Negative prompt: (worst quality, low quality:1.4), easynegative\n"
        "Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, "
        "Size: 64x96, Model hash: 7f96a1a9ca, Model: anything-v5, VAE hash: 235745af8d, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.4, Clip skip: 2, "
        "RNG: CPU, Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent, "
        f'Lora hashes: "add_detail: {addnet}", TI hashes: "easynegative: c74b4e810b03", '
        "Version: v1.10.1\n"
    )


def installed_lora(capsys, tmp_path: Path) -> str:
    """Add a LoRA as `detail_tweaker`; its addnet hash, computed from its definition."""
    path = write_lora(tmp_path / "lora.safetensors")
    outcome = dreamcord(capsys, "lora", "add", str(path), "--name", "detail_tweaker")
    assert outcome.code == 0, outcome.err
    raw = path.read_bytes()
    return hashlib.sha256(raw[8 + struct.unpack("<Q", raw[:8])[0] :]).hexdigest()[:12]


def test_a_civitai_recipe_sets_every_field_it_names_or_notes_it(capsys, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.txt"
    recipe.write_text(civitai_recipe(installed_lora(capsys, tmp_path)), encoding="utf-8")
    report = generate(capsys, "--parameters", str(recipe))
    params = report["params"]
    assert params["prompt"] == "masterpiece, best quality, 1girl, <lora:detail_tweaker:0.5:0.5>"
    assert params["loras"] == [{"name": "detail_tweaker", "te_weight": 0.5, "unet_weight": 0.5}]
    assert params["negative"] == "(worst quality, low quality:1.4), easynegative"
    assert (params["steps"], params["sampler"], params["schedule"]) == (3, "DPM++ 2M", "Karras")
    assert (params["cfg"], params["seed"], params["clip_skip"]) == (6.5, 1234567890, 2)
    assert (params["width"], params["height"], params["rng"]) == (64, 96, "CPU")
    assert params["hires"] == {"scale": 1.5, "steps": 2, "denoise": 0.4, "upscaler": "Latent"}
    assert report["images"][0]["width"] == 96
    notes = sorted(report["notes"])
    assert len(notes) == 3, notes
    assert notes[0].startswith("Model: 'anything-v5' (hash 7f96a1a9ca) is not installed here")
    assert notes[1].startswith(
        "VAE: 'vae-ft-mse-840000-ema-pruned.safetensors' (hash 235745af8d) is not the VAE used here"
    )
    assert notes[2].startswith("embedding 'easynegative' is not installed")


def test_options_given_with_the_recipe_override_it_and_notes_go_to_stderr(
    capsys, tmp_path: Path
) -> None:
    recipe = tmp_path / "recipe.txt"
    recipe.write_text(civitai_recipe("7c6bad76eb54"), encoding="utf-8")
    args = ("a cat", "--parameters", str(recipe), "--steps", "2", "--hires-scale", "1")
    outcome = dreamcord(capsys, "generate", *args, "--out", "o")
    assert outcome.code == 0, outcome.err
    png = Image.open(outcome.out.strip())
    text = png.info["parameters"]
    assert text.startswith("a cat\nNegative prompt: (worst quality, low quality:1.4)")
    assert "Steps: 2," in text and "Hires upscale: 1," in text and "Seed: 1234567890," in text
    notes = [line for line in outcome.err.splitlines() if line.startswith("note: ")]
    assert any(note.startswith("note: VAE: ") for note in notes)
    assert not any("add_detail" in note for note in notes), "the recipe's prompt is not used"


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_a_civitai_jpeg_or_webp_is_read_as_a1111_keeps_it(
    capsys, tmp_path: Path, kind: str
) -> None:
    """A1111 writes a JPEG's or WebP's infotext as EXIF UserComment: UNICODE, UTF-16BE."""
    exif = Image.Exif()
    comment = civitai_recipe("0123456789ab").encode("utf-16-be")
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + comment
    path = tmp_path / f"civitai.{kind.lower()}"
    Image.new("RGB", (64, 96), "teal").save(path, format=kind, exif=exif.tobytes())
    params = generate(capsys, "--parameters", str(path))["params"]
    assert (params["seed"], params["width"], params["height"]) == (1234567890, 64, 96)
    assert params["negative"] == "(worst quality, low quality:1.4), easynegative"


@pytest.mark.parametrize(
    ("content", "extra", "says"),
    [
        (None, (), "does not exist"),
        ("a red fox", (), "this is not A1111 parameters"),
        ("a\nSteps: many, Sampler: Euler, Seed: 1", (), "Steps: 'many' is not a whole number"),
        (b"\x00\xff\xfe binary", (), "neither a picture nor a UTF-8 text file"),
        ("jpeg", (), "has no parameters"),
        ("png", (), "has no parameters"),
        ("a\nSteps: 2, Seed: 1, Size: 64x64", ("--upscale", "x.png"), "use --parameters or"),
    ],
)
def test_a_bad_recipe_is_one_line_on_stderr(capsys, tmp_path: Path, content, extra, says) -> None:
    path = tmp_path / "recipe.txt"
    if content in ("png", "jpeg"):
        Image.new("RGB", (8, 8)).save(path, format=content.upper())
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    outcome = dreamcord(capsys, "generate", "--parameters", str(path), *extra)
    assert outcome.code == 2
    assert says in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1
