"""The `dreamcord` CLI: help, generate on the tiny model, and bad input as one stderr line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bot.cli_helpers import dreamcord

TINY = ("--model", "tiny", "--steps", "2", "--size", "64x64")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env, outputs land in tmp
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))


def test_help_lists_every_command_without_loading_torch() -> None:
    code = "import sys; from bot.cli import main; main(['--help'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for command in ("run", "generate", "doctor"):
        assert f"    {command}" in result.stdout


def test_generate_writes_a_png_per_image_with_seed_i(capsys, tmp_path: Path) -> None:
    args = ("a red fox", "--count", "2", "--seed", "42", *TINY, "--json")
    first = dreamcord(capsys, "generate", *args, "--out", "one")
    second = dreamcord(capsys, "generate", *args, "--out", "two")
    assert first.code == second.code == 0, first.err
    report, again = json.loads(first.out), json.loads(second.out)
    assert [image["seed"] for image in report["images"]] == [42, 43]
    assert report["params"]["steps"] == 2
    assert report["timings"]["wall_s"] > 0
    for image, twin in zip(report["images"], again["images"], strict=True):
        png, other = Image.open(image["path"]), Image.open(twin["path"])
        assert f"Seed: {image['seed']}," in png.info["parameters"]
        assert png.size == (image["width"], image["height"]) == (64, 64)
        assert np.array_equal(np.asarray(png), np.asarray(other))
    assert "tiny model has random weights" in first.err


def test_generate_writes_sampler_and_schedule_type_as_a1111_does(capsys) -> None:
    args = ("a fox", *TINY, "--sampler", "DPM++ 2M SDE Karras", "--json")
    outcome = dreamcord(capsys, "generate", *args)
    assert outcome.code == 0, outcome.err
    png = Image.open(json.loads(outcome.out)["images"][0]["path"])
    assert "Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale:" in png.info["parameters"]


def test_rng_and_ensd_reach_the_png_as_a1111_writes_them(capsys) -> None:
    args = ("a fox", *TINY, "--sampler", "Euler a")
    nv = _one_png(capsys, *args, "--rng", "nv", "--ensd", "31337", "--out", "nv")
    text = Image.open(nv["images"][0]["path"]).info["parameters"]
    assert (nv["params"]["rng"], nv["params"]["ensd"]) == ("NV", 31337)
    assert "ENSD: 31337, RNG: NV," in text
    gpu = _one_png(capsys, *args, "--rng", "GPU", "--out", "gpu")
    assert "RNG:" not in Image.open(gpu["images"][0]["path"]).info["parameters"]


def test_python_dash_m_bot_is_the_same_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "a fox", *TINY, "--steps", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "dreamcord: steps 0 is out of range: use 1 to 60"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--size", "500x512"), "multiples of 8, try 504x512"),
        (("--size", "0x512"), "must be positive"),
        (("--size", "4096x4096"), "over the limit"),
        (("--size", "big"), "is not WxH or W:H"),
        (("--steps", "500"), "steps 500 is out of range: use 1 to 60"),
        (("--count", "9"), "count 9 is out of range"),
        (("--cfg", "99"), "cfg 99 is out of range"),
        (("--cfg", "lots"), "invalid float value: 'lots'"),
        (("--sampler", "Euler b"), "unknown sampler 'Euler b': use one of Euler a"),
        (("--schedule", "Fast"), "unknown schedule type 'Fast': use one of Automatic"),
        (("--sampler", "DDIM", "--schedule", "Karras"), "DDIM keeps its own timesteps"),
        (("--model", "missing/dir/model.safetensors"), "does not exist"),
        (("--model", "model.ckpt"), "pickles that can run code"),
        (("--model", "./nowhere"), "was not found"),
        (("--seed", "-1"), "seed -1 is out of range"),
        (("--rng", "cuda"), "unknown RNG 'cuda': use CPU"),
        (("--ensd", "1e3"), "ENSD '1e3' is not a whole number"),
        (("--ensd", "-5"), "ENSD -5 is out of range"),
    ],
)
def test_bad_input_is_one_line_on_stderr(capsys, args: tuple[str, ...], says: str) -> None:
    outcome = dreamcord(capsys, "generate", "a fox", "--model", "tiny", *args)
    assert outcome.code == 2
    assert says in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1
    assert "Traceback" not in outcome.err


def test_corrupt_safetensors_checkpoint_is_refused(capsys, tmp_path: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    outcome = dreamcord(capsys, "generate", "a fox", "--model", str(broken))
    assert outcome.code == 2
    assert "not a readable .safetensors file" in outcome.err
    assert "download it again" in outcome.err


def test_an_inpainting_checkpoint_is_refused_with_the_reason(capsys, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "sd-v1-5-inpainting.safetensors"
    conv_in = torch.zeros(320, 9, 3, 3)  # what inpainting UNets read: latents, mask, masked image
    save_file({"model.diffusion_model.input_blocks.0.0.weight": conv_in}, str(path))
    outcome = dreamcord(capsys, "generate", "a fox", "--model", str(path), "--steps", "2")
    assert outcome.code != 0
    assert (
        "sd-v1-5-inpainting is an SD1.5 inpainting checkpoint (9 input channels); it serves "
        "image edits (a mask or a grown canvas); pick a normal checkpoint for /imagine"
    ) in outcome.err


def test_doctor_quick_reports_each_check(capsys) -> None:
    outcome = dreamcord(capsys, "doctor", "--quick")
    lines = outcome.out.strip().splitlines()
    names = [line[6:].split(":")[0] for line in lines]
    assert names == [
        "token",
        "data dir",
        "database",
        "library",
        "device",
        "models",
        "image prompts",
        "worker",
        "redis",
        "workers",
    ]
    assert lines[0].startswith("FIX   token: DISCORD_TOKEN is not set")
    assert lines[2].startswith("OK    database: integrity ok")
    assert outcome.code == 1


def _one_png(capsys, *args: str) -> dict:
    outcome = dreamcord(capsys, "generate", *args, "--model", "tiny", "--json")
    assert outcome.code == 0, outcome.err
    return json.loads(outcome.out)


def test_hires_doubles_the_size_and_writes_its_parameters(capsys) -> None:
    report = _one_png(capsys, "a fox", *TINY, "--hires", "--hires-scale", "2", "--out", "h")
    image = report["images"][0]
    assert (image["width"], image["height"]) == (128, 128)
    text = Image.open(image["path"]).info["parameters"]
    for field in ("Size: 64x64", "Hires upscale: 2", "Hires steps: 15", "Hires upscaler: Latent"):
        assert field in text


def test_upscale_and_vary_start_from_a_png_with_parameters(capsys) -> None:
    source = _one_png(capsys, "a fox", *TINY, "--seed", "7", "--out", "src")["images"][0]
    upscaled = _one_png(capsys, "--upscale", source["path"], "--out", "up")
    assert upscaled["images"][0]["width"] == 128
    assert upscaled["params"]["mode"] == "upscale"
    assert upscaled["params"]["prompt"] == "a fox"
    varied = _one_png(capsys, "--vary", source["path"], "--strength", "subtle", "--out", "v")
    assert [image["seed"] for image in varied["images"]] == [7, 7, 7, 7]
    assert len({image["variation_seed"] for image in varied["images"]}) == 4
    assert (
        "Variation seed strength: 0.12"
        in Image.open(varied["images"][0]["path"]).info["parameters"]
    )
    one = _one_png(capsys, "--vary", source["path"], "--count", "1", "--out", "v1")
    assert len(one["images"]) == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--vary", "x.png", "--upscale", "y.png"), "use only one of"),
        (("--upscale", "missing.png"), "does not exist"),
        (("a fox", "--init", "missing.png"), "does not exist"),
        (("a fox", "--hires", "--upscaler", "Magic"), "unknown upscaler 'Magic'"),
        (("a fox", "--hires", "--hires-scale", "5"), "hires scale 5 is out of range"),
        (("a fox", "--init", "in.png", "--strength", "lots"), "use a number from 0 to 1"),
        ((), "give a prompt"),
    ],
)
def test_bad_image_options_are_one_line(capsys, tmp_path: Path, args, says: str) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "in.png")
    outcome = dreamcord(capsys, "generate", *args, "--model", "tiny")
    assert outcome.code == 2
    assert says in outcome.err
    assert len(outcome.err.strip().splitlines()) == 1


def test_upscale_by_four(capsys) -> None:
    source = _one_png(capsys, "a fox", *TINY, "--seed", "3", "--out", "src4")["images"][0]
    report = _one_png(capsys, "--upscale", source["path"], "--factor", "4", "--out", "up4")
    assert (report["images"][0]["width"], report["images"][0]["height"]) == (256, 256)


def test_fast_drafts_say_so_in_their_parameters(capsys) -> None:
    fast = _one_png(capsys, "a fox", *TINY, "--seed", "3", "--fast", "--out", "fast")
    text = Image.open(fast["images"][0]["path"]).info["parameters"]
    assert "Token merging ratio: 0.5" in text
    flagged = _one_png(capsys, "a fox --fast", *TINY, "--seed", "3", "--out", "flag")
    assert "Token merging ratio: 0.5" in Image.open(flagged["images"][0]["path"]).info["parameters"]
    plain = _one_png(capsys, "a fox", *TINY, "--seed", "3", "--out", "plain")
    assert "Token merging" not in Image.open(plain["images"][0]["path"]).info["parameters"]
