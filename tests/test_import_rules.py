"""design.md's import rules, checked on the source so they stay true as the code grows."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "cogs", "pipeline", "data")
FORBIDDEN = {
    "pipeline": {"discord", "bot", "cogs", "data", "aiosqlite"},
    "data": {"discord", "cogs", "bot"},
    "cogs": {"torch", "diffusers", "transformers", "safetensors", "aiosqlite", "data"},
}
ENGINE_SIDE = (
    "pipeline.engine",
    "pipeline.inpaint",
    "pipeline.schedules",
    "pipeline.k_samplers",
    "pipeline.noise",
    "pipeline.tiny",
    "pipeline.tiled",
    "pipeline.conditioning",
    "pipeline.preview",
    "pipeline.guidance",
    "pipeline.pixel_upscalers",
    "pipeline.safety",
    "pipeline.convert.child",
    "pipeline.convert.layouts",
    "pipeline.convert.hypernetwork",
    "pipeline.control.units",
    "pipeline.image_prompts.adapter",
    "pipeline.training.trainer",
    "pipeline.training.kohya",
)
ENGINE_PACKAGES = ("pipeline.lora", "pipeline.embeddings", "bench")
"""Modules that exist to run a model may import torch at the top. Everything else must import
without it: the CLI's --help, the prompt parser, the queue, storage and the cogs."""
HEAVY = ("torch", "diffusers", "transformers", "safetensors", "accelerate")
COGS_REACH_BOT_THROUGH = {"bot.app"}
"""The cogs are Discord only: the App's services and result types are all they take from bot/
(the CLI, repositories and the other bot modules stay out of reach)."""
COMMAND_MODULES = {
    "cogs.account",
    "cogs.admin",
    "cogs.imagine",
    "cogs.info",
    "cogs.models",
    "cogs.library.commands",
}
"""Modules holding slash commands: none imports another (shared parts live below them)."""


def _imported_packages(path: Path) -> set[str]:
    """Every top-level package a file imports, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports by its full dotted name, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", _sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_module_respects_the_import_direction(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = _imported_packages(path) & FORBIDDEN.get(package, set())
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_everything_but_the_engine_imports_without_torch() -> None:
    light = [
        name
        for name in map(_module_name, _sources())
        if name not in ENGINE_SIDE
        and not name.startswith(ENGINE_PACKAGES)
        and not name.endswith("__main__")
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {light!r}: importlib.import_module(name)\n"
        "import bot.cli; bot.cli.build_parser()\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_strict_on_the_torch_free_pipeline() -> None:
    """pyproject's strict override names exactly the pipeline modules that run no model."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = {
        module
        for override in config["overrides"]
        if override.get("disallow_untyped_defs")
        for module in override["module"]
    }
    light = {
        name
        for name in map(_module_name, sorted((ROOT / "pipeline").rglob("*.py")))
        if name not in ENGINE_SIDE
        and not name.startswith(ENGINE_PACKAGES)
        and not name.startswith("pipeline.prompt")
    }
    assert {"data", "data.*", "pipeline.prompt.*"} <= strict
    assert strict - {"data", "data.*", "pipeline.prompt.*"} == light


def _cog_sources() -> list[Path]:
    return sorted((ROOT / "cogs").rglob("*.py"))


@pytest.mark.parametrize("path", _cog_sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_a_cog_reaches_bot_only_through_the_app(path: Path) -> None:
    from_bot = {name for name in _imported_modules(path) if name.split(".")[0] == "bot"}
    wrong = from_bot - COGS_REACH_BOT_THROUGH
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}: go through bot.app"


@pytest.mark.parametrize("path", _cog_sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_command_module_imports_another(path: Path) -> None:
    wrong = _imported_modules(path) & (COMMAND_MODULES - {_module_name(path)})
    assert not wrong, f"{path.relative_to(ROOT)} imports the command modules {sorted(wrong)}"


@pytest.mark.parametrize("path", _cog_sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_cog_touches_a_repository_or_another_cog_by_name(path: Path) -> None:
    text = path.read_text()
    assert "repos." not in text and "get_cog(" not in text, f"{path.relative_to(ROOT)}"


FAKE_DISCORD = [
    path
    for path in sorted((ROOT / "tests" / "fakediscord").rglob("*.py"))
    if not path.name.startswith("test_")
]


@pytest.mark.parametrize("path", FAKE_DISCORD, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_fake_discord_needs_nothing_of_dreamcord(path: Path) -> None:
    """Another discord.py project can take tests/fakediscord as it is: its own tests may use
    Dreamcord, the fake itself may not."""
    wrong = _imported_packages(path) & set(PACKAGES)
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
