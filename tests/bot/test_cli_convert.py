"""`dreamcord convert`: one report line or JSON document, and every refusal as one stderr line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bot.cli_helpers import dreamcord
from tests.pipeline.convert import pickles


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.safetensors"))


def test_an_embedding_is_reported_with_the_command_that_adds_it(capsys, tmp_path: Path) -> None:
    pickles.a1111_embedding(tmp_path / "bad-hands-5.pt")
    outcome = dreamcord(capsys, "convert", "bad-hands-5.pt")
    assert outcome.code == 0, outcome.err
    assert outcome.out == (
        "bad-hands-5.pt: an A1111 embedding of 6 vectors (width 768) -> bad-hands-5.safetensors; "
        "add it with `dreamcord embedding add bad-hands-5.safetensors`\n"
    )
    assert outputs(tmp_path) == ["bad-hands-5.safetensors"]


def test_json_describes_an_upscaler_written_where_out_says(capsys, tmp_path: Path) -> None:
    state = {
        "conv_first.weight": torch.zeros(8, 3, 3, 3),
        "body.0.rdb1.conv1.weight": torch.zeros(4, 8, 3, 3),
    }
    torch.save({"params_ema": state, "params": state}, tmp_path / "4x.pth")
    (tmp_path / "models").mkdir()
    outcome = dreamcord(
        capsys, "convert", "4x.pth", "--out", "models/4x-Sharp.safetensors", "--json"
    )
    assert outcome.code == 0, outcome.err
    report = json.loads(outcome.out)
    assert report == {
        "source": "4x.pth",
        "output": "models/4x-Sharp.safetensors",
        "kind": "upscaler",
        "tensors": 2,
        "dtypes": ["float32"],
        "layout": "BasicSR",
    }
    assert outputs(tmp_path) == ["4x-Sharp.safetensors"]


def _evil(tmp_path: Path) -> str:
    marker = tmp_path / "marker"
    return str(pickles.torch_saved(tmp_path / "evil.pt", pickles.payloads(marker)["os.system"]))


def _text(tmp_path: Path) -> str:
    (tmp_path / "notes.pt").write_text("not a pickle at all\n")
    return "notes.pt"


def _taken(tmp_path: Path) -> str:
    pickles.a1111_embedding(tmp_path / "emb.pt")
    (tmp_path / "emb.safetensors").write_bytes(b"keep me")
    return "emb.pt"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_evil, "evil.pt imports posix.system: it could run code, refused (nothing was loaded)"),
        (_text, "notes.pt is not a PyTorch pickle"),
        (lambda tmp_path: "missing.ckpt", "missing.ckpt does not exist"),
        (_taken, "emb.safetensors already exists: use --force to replace it"),
    ],
    ids=["code", "not-a-pickle", "missing", "output-exists"],
)
def test_each_refusal_is_one_stderr_line_and_leaves_no_file(
    capsys, tmp_path: Path, make, says: str
) -> None:
    source = make(tmp_path)
    before = outputs(tmp_path)
    outcome = dreamcord(capsys, "convert", source)
    assert outcome.code == 2 and outcome.out == ""
    assert outcome.err.startswith(f"dreamcord: {says}") and outcome.err.count("\n") == 1
    assert outputs(tmp_path) == before and not (tmp_path / "marker").exists()


def test_help_says_it_is_for_host_files_only_and_loads_no_torch() -> None:
    code = (
        "import sys; from bot.cli import main\n"
        "try: main(['convert', '--help'])\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert "never reach it" in result.stdout and "--force" in result.stdout
    assert result.stdout.rstrip().endswith("False")
