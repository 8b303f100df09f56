"""The safety policy: what a flagged image gets where, a server's own mode, the settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.guild import Actor, GuildRules, GuildSettings, policy_changes, safety_choice
from bot.models import build_engine
from bot.safety import SafetyMode, SafetyRules, Screening, screen
from bot.settings import load_settings
from cogs.admin import describe_policy
from data.generations import Image
from data.repositories import Repositories
from pipeline.errors import UserError
from tests.bot.cli_helpers import dreamcord
from tests.pipeline.tiny_safety import save_tiny_checker

LIMIT = 1024 * 1024
ADMIN = Actor(guild_id=7, user_id=42)


def images(*verdicts: bool | None) -> list[Image]:
    return [
        Image(i, 1, i, i, None, 64, 64, f"{i}.png", "0" * 64, 10, "p", flagged=verdict)
        for i, verdict in enumerate(verdicts)
    ]


MIXED = images(False, True, None, True)


@pytest.mark.parametrize("mode", list(SafetyMode))
def test_in_an_nsfw_channel_every_image_is_allowed(mode: SafetyMode) -> None:
    assert screen(MIXED, mode, channel_is_nsfw=True) == Screening((0, 1, 2, 3))


def test_spoiler_mode_sends_a_result_with_a_flagged_image_as_a_spoiler() -> None:
    screening = screen(MIXED, SafetyMode.SPOILER, channel_is_nsfw=False)
    assert screening == Screening((0, 1, 2, 3), spoiler=True)
    assert screening.note == "marked as a spoiler by the safety checker"


def test_block_mode_withholds_exactly_the_flagged_images_with_a_note() -> None:
    screening = screen(MIXED, SafetyMode.BLOCK, channel_is_nsfw=False)
    assert screening.shown == (0, 2)
    assert screening.note == "2 images were withheld by the safety checker"
    one = screen(images(True, False), SafetyMode.BLOCK, channel_is_nsfw=False)
    assert one.note == "1 image was withheld by the safety checker"


@pytest.mark.parametrize("mode", list(SafetyMode))
def test_nothing_flagged_or_never_checked_is_posted_as_it_is(mode: SafetyMode) -> None:
    assert screen(images(False, None), mode, channel_is_nsfw=False) == Screening((0, 1))


def test_off_posts_flagged_images_as_they_are() -> None:
    screening = screen(MIXED, SafetyMode.OFF, channel_is_nsfw=False)
    assert screening == Screening((0, 1, 2, 3)) and screening.note is None


async def test_a_server_chooses_its_own_mode_over_the_deployments(repos: Repositories) -> None:
    guild = GuildRules(repos.settings, repos.audit, LIMIT, 60, checker_loaded=True)
    rules = SafetyRules(guild, SafetyMode.SPOILER)
    assert await rules.mode(7) is SafetyMode.SPOILER
    await guild.set_policy(ADMIN, "policy.set", safety="block")
    assert await rules.mode(7) is SafetyMode.BLOCK
    assert await rules.mode(8) is SafetyMode.SPOILER, "other servers keep the default"
    assert await rules.mode(None) is SafetyMode.SPOILER, "a DM has the deployment's mode"
    withheld = await rules.screen(MIXED, 7, channel_is_nsfw=False)
    assert withheld.shown == (0, 2)
    await guild.set_policy(ADMIN, "policy.set", safety="default")
    assert await rules.mode(7) is SafetyMode.SPOILER
    assert await repos.settings.guild(7) == {}
    audit = await repos.audit.list_for_guild(7)  # newest first
    assert [(entry.target, entry.detail["to"]) for entry in audit] == [
        ("safety", None),
        ("safety", "block"),
    ]


def test_a_server_cannot_ask_for_verdicts_the_bot_does_not_make() -> None:
    with pytest.raises(UserError, match="SAFETY_CHECKER=spoiler or block"):
        policy_changes(GuildSettings(), safety="block", max_pixels_limit=LIMIT)
    off = policy_changes(GuildSettings(), safety="off", max_pixels_limit=LIMIT)
    assert off == {"safety": "off"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20), st.booleans())
def test_any_safety_choice_is_a_mode_the_default_or_a_refusal_that_says_why(
    choice: str, checker_loaded: bool
) -> None:
    try:
        mode = safety_choice(choice, checker_loaded)
    except UserError as error:
        assert "choose off, spoiler, block or default" in str(error) or (
            "SAFETY_CHECKER=spoiler or block" in str(error) and not checker_loaded
        )
    else:
        assert mode is None or SafetyMode(mode) is SafetyMode.OFF or checker_loaded


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20))
def test_any_safety_checker_value_loads_as_a_mode_or_stops_naming_the_variable(
    value: str,
) -> None:
    try:
        loaded = load_settings(None, safety_checker=value).safety_checker
    except UserError as error:
        assert "SAFETY_CHECKER=" in str(error) and "\n" not in str(error)
    else:
        assert loaded == value.lower() and loaded in set(SafetyMode)


def test_policy_show_names_the_safety_mode() -> None:
    assert dict(describe_policy(GuildSettings()))["safety"] == "bot default (SAFETY_CHECKER)"
    assert dict(describe_policy(GuildSettings(safety="block")))["safety"] == "block"


def test_the_setting_takes_any_case_and_names_itself_when_wrong(tmp_path: Path) -> None:
    assert load_settings(None, safety_checker="Block").safety_checker == "block"
    assert load_settings(None).safety_checker == "off"
    with pytest.raises(UserError, match="SAFETY_CHECKER='blur'"):
        load_settings(None, safety_checker="blur")


def test_start_up_stops_when_the_checker_it_needs_is_missing(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        model="tiny",
        device="cpu",
        data_dir=tmp_path,
        safety_checker="spoiler",
        safety_checker_model=str(tmp_path / "nowhere"),
    )
    with pytest.raises(UserError, match="SAFETY_CHECKER=off"):
        build_engine(settings)


CLI_TINY = ("--model", "tiny", "--steps", "2", "--size", "64x64", "--count", "2")


@pytest.fixture
def cli_checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI in a folder of its own, with SAFETY_CHECKER=block and a checker that flags all."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAFETY_CHECKER", "block")
    folder = save_tiny_checker(tmp_path / "checker", flags_every_image=True)
    monkeypatch.setenv("SAFETY_CHECKER_MODEL", str(folder))


@pytest.mark.usefixtures("cli_checker")
def test_the_cli_writes_flagged_images_and_says_so_next_to_each_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = dreamcord(capsys, "generate", "a fox", *CLI_TINY, "--out", "plain")
    assert outcome.code == 0, outcome.err
    lines = outcome.out.splitlines()
    assert len(lines) == 2
    for line in lines:
        path, _, remark = line.partition(" ")
        assert remark == "(flagged by the safety checker)"
        assert Path(path).is_file(), "the CLI reports, it does not withhold"

    report = dreamcord(capsys, "generate", "a fox", *CLI_TINY, "--json", "--out", "js")
    assert [image["flagged"] for image in json.loads(report.out)["images"]] == [True, True]


def test_the_cli_stops_with_one_line_when_the_checker_is_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAFETY_CHECKER", "spoiler")
    outcome = dreamcord(capsys, "generate", "a fox", *CLI_TINY)
    assert outcome.code != 0 and outcome.out == ""
    [line] = [line for line in outcome.err.splitlines() if "safety checker" in line]
    assert "hf download CompVis/stable-diffusion-safety-checker" in line
    assert "Traceback" not in outcome.err
