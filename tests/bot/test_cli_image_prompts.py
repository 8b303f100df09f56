"""`dreamcord generate --image-prompt IMAGE [--image-weight W] --style-ref IMAGE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.image_prompts.files import NOT_CONFIGURED
from tests.bot.cli_helpers import dreamcord
from tests.ip_adapter_files import write_adapter, write_encoder

TINY = ("--model", "tiny", "--steps", "2", "--size", "64x64")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    Image.new("RGB", (40, 30), "orange").save(tmp_path / "look.png")
    Image.new("RGB", (40, 30), "teal").save(tmp_path / "style.png")


@pytest.fixture
def adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IP_ADAPTER", str(write_adapter(tmp_path / "adapter")))
    monkeypatch.setenv("IMAGE_ENCODER", str(write_encoder(tmp_path / "encoder")))


def test_each_weight_belongs_to_the_picture_before_it_and_json_shows_them(
    capsys, adapter, tmp_path: Path
) -> None:
    args = ("a fox", *TINY, "--json", "--image-prompt", "look.png", "--image-weight", "0.5")
    result = dreamcord(
        capsys, "generate", *args, "--image-prompt", "style.png", "--style-ref", "style.png"
    )
    assert result.code == 0, result.err
    prompts = json.loads(result.out)["params"]["image_prompts"]
    assert prompts == [
        {"image": str(tmp_path / "look.png"), "weight": 0.5, "style": False},
        {"image": str(tmp_path / "style.png"), "weight": 1.0, "style": False},
        {"image": str(tmp_path / "style.png"), "weight": 1.0, "style": True},
    ]


def _refusal(capsys, *args: str) -> str:
    result = dreamcord(capsys, "generate", "a fox", *TINY, *args)
    assert result.code != 0
    assert result.err.strip().count("\n") == 0, result.err
    return result.err


def test_a_weight_without_a_picture_before_it_is_refused(capsys) -> None:
    assert "follows the --image-prompt" in _refusal(capsys, "--image-weight", "0.5")


def test_a_weight_out_of_range_is_refused(capsys, adapter) -> None:
    err = _refusal(capsys, "--image-prompt", "look.png", "--image-weight", "3")
    assert "image prompt 1: weight 3 is out of range: use 0 to 2" in err


def test_a_missing_picture_is_refused(capsys, adapter) -> None:
    assert "does not exist" in _refusal(capsys, "--image-prompt", "nowhere.png")


def test_sref_in_the_prompt_asks_for_style_ref(capsys, adapter) -> None:
    result = dreamcord(capsys, "generate", "a fox --sref 12", *TINY)
    assert result.code != 0 and "--style-ref IMAGE" in result.err


def test_image_prompts_without_an_adapter_are_refused(capsys) -> None:
    assert NOT_CONFIGURED in _refusal(capsys, "--image-prompt", "look.png")


def test_doctor_names_the_adapter_and_its_encoder(capsys, adapter) -> None:
    result = dreamcord(capsys, "doctor", "--quick")
    line = next(line for line in result.out.splitlines() if "image prompts" in line)
    assert line.startswith("OK    image prompts: ip-adapter_sd15.safetensors (7 layers")
