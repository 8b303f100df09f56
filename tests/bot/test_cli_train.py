"""`dreamcord train` as a user runs it: plan, train, register; refusals first; kill -9 resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bot.cli_helpers import dreamcord
from tests.bot.library_files import write_lora
from tests.pipeline.training.pictures import picture, training_set, write_folder, write_zip

ROOT = Path(__file__).resolve().parents[2]
QUICK = ("--resolution", "256", "--rank", "4", "--lr", "3e-3")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL", "tiny")


def test_a_zip_is_trained_and_registered_with_its_trigger_and_weight(capsys, tmp_path) -> None:
    source = write_zip(tmp_path / "fox.zip", training_set(4))
    args = ("--name", "fox", "--trigger", "sksfox", "--steps", "4", "--weight", "0.8", "--json")
    outcome = dreamcord(capsys, "train", str(source), *args, *QUICK)
    assert outcome.code == 0, outcome.err
    report = json.loads(outcome.out)  # one JSON document, nothing else on stdout
    assert (report["name"], report["triggers"], report["default_weight"]) == (
        "fox",
        ["sksfox"],
        0.8,
    )
    assert (report["steps"], report["images"], report["resumed_from"]) == (4, 4, 0)
    info = dreamcord(capsys, "lora", "info", "fox").out
    assert "triggers  sksfox" in info and "kind      lora" in info
    assert not (tmp_path / "data" / "training" / "fox").exists()  # the run's folder is gone


def test_a_taken_name_is_refused_before_anything_runs(capsys, tmp_path) -> None:
    added = dreamcord(capsys, "lora", "add", str(write_lora(tmp_path / "a.safetensors")))
    assert added.code == 0, added.err
    source = write_folder(tmp_path / "set", training_set(2))
    outcome = dreamcord(capsys, "train", str(source), "--name", "Test-Subject", *QUICK)
    assert outcome.code == 2 and outcome.out == ""
    assert "already a LoRA named 'Test-Subject'" in outcome.err and outcome.err.count("\n") == 1
    assert not (tmp_path / "data" / "training").exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../evil.png": picture()}, "points outside the archive"),
        ({"a.txt": "fox"}, "no pictures found"),
        ({"small.png": picture(128, 128)}, "small.png (128x128)"),
    ],
)
def test_a_refused_zip_leaves_nothing_behind(capsys, tmp_path, files, message) -> None:
    source = write_zip(tmp_path / "bad.zip", files)
    outcome = dreamcord(capsys, "train", str(source), "--name", "fox", *QUICK)
    assert outcome.code == 2 and message in outcome.err and outcome.err.count("\n") == 1
    assert not (tmp_path / "data" / "training" / "fox").exists()
    assert not (tmp_path / "evil.png").exists()


def test_bad_options_are_one_line(capsys, tmp_path) -> None:
    source = write_folder(tmp_path / "set", training_set(1))
    for extra, message in (
        (("--resolution", "500"), "multiple of 64"),
        (("--weight", "99"), "--weight 99 is out of range"),
        (("--optimizer", "sgd"), "invalid choice"),
    ):
        outcome = dreamcord(capsys, "train", str(source), "--name", "fox", *extra)
        assert outcome.code == 2 and message in outcome.err and outcome.err.count("\n") == 1


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_then_the_same_command_resumes(capsys, tmp_path) -> None:
    source = write_folder(tmp_path / "set", training_set(4))
    argv = ("train", str(source), "--name", "fox", "--steps", "60", "--checkpoint-every", "5")
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    checkpoints = tmp_path / "data" / "training" / "fox" / "checkpoints"
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", *argv, *QUICK], stdout=out, stderr=err, env=env
        )
        deadline = time.monotonic() + 240
        while not list(checkpoints.glob("step-*")) and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, (tmp_path / "err.txt").read_text()
    printed = (tmp_path / "out.txt").read_text()
    assert "60 steps in all" in printed  # the plan came first
    last = max(int(path.name.removeprefix("step-")) for path in checkpoints.glob("step-*"))
    assert 5 <= last < 60

    again = dreamcord(capsys, "train", *argv[1:], *QUICK)
    assert again.code == 0, again.err
    assert f"resuming from the checkpoint at step {last}\n" in again.out
    assert "added LoRA 'fox'" in again.out
    listing = dreamcord(capsys, "lora", "list").out
    assert listing.splitlines()[1].split()[:2] == ["fox", "lora"]
