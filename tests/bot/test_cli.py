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
        (("--model", "missing/dir/model.safetensors"), "does not exist"),
        (("--model", "model.ckpt"), "pickles that can run code"),
        (("--model", "./nowhere"), "was not found"),
        (("--seed", "-1"), "seed -1 is out of range"),
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


def test_doctor_quick_reports_each_check(capsys) -> None:
    outcome = dreamcord(capsys, "doctor", "--quick")
    lines = outcome.out.strip().splitlines()
    assert [line.split(":")[0].split()[-1] for line in lines] == ["token", "dir", "device"]
    assert lines[0].startswith("FIX   token: DISCORD_TOKEN is not set")
    assert outcome.code == 1
