"""`pip install .` alone gives a working program: the wheel carries every file Dreamcord reads.

The wheel is built from a copy of what the Dockerfile copies (pyproject.toml, README.md and the
packages), installed into a folder of its own, and run from outside the source tree with that
folder first on the path, so neither the editable install nor the checkout can fill a gap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, pipeline, pipeline.models, pipeline.tokenizer;"
    "print(json.dumps({'package': pipeline.__file__,"
    " 'vocabulary': str(pipeline.tokenizer.vocabulary_path()),"
    " 'configs': str(pipeline.models.config_dir())}))"
)


def _packages() -> list[str]:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    return [name.rstrip("*") for name in found["find"]["include"]]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dreamcord's wheel, built offline from a clean copy of the shipped sources."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in _packages():
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."], source)
    (built,) = out.glob("dreamcord-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)], target)
    return target


def _environment(installed: Path, data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return env | {"PYTHONPATH": str(installed), "DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}


def test_the_wheel_carries_the_vocabulary_its_licence_and_the_configs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "pipeline/vocab/bpe_simple_vocab_16e6.txt.gz",
        "pipeline/vocab/LICENSE",
        "pipeline/configs/sd15/model_index.json",
        "pipeline/configs/sd15/unet/config.json",
        "data/migrations/001_initial.sql",
    } <= names


@pytest.mark.slow
def test_an_installed_wheel_generates_an_image_on_its_own(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _environment(installed, tmp_path / "data")
    found = json.loads(_run([sys.executable, "-c", PROBE], work, env))
    for path in found.values():
        assert Path(path).is_relative_to(installed), f"{path} is not the installed copy"

    command = [sys.executable, "-m", "bot", "generate", "a fox", "--model", "tiny"]
    command += ["--steps", "2", "--size", "64x64", "--seed", "7", "--out", "pngs", "--json"]
    report = json.loads(_run(command, work, env).strip().splitlines()[-1])
    (image,) = report["images"]
    png = work / image["path"]  # --out is relative to the command's working folder
    assert png.is_file() and png.parent == work / "pngs"
    with Image.open(png) as opened:
        assert opened.size == (64, 64)
        assert "a fox\n" in opened.info["parameters"]
