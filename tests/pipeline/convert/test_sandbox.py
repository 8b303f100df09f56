"""`convert_file` around the child: hostile, broken, oversized and slow files are refused with
nothing written, and a good file goes through the whole path into place."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from pipeline.convert import sandbox
from pipeline.convert.sandbox import Limits, convert_file
from pipeline.errors import UserError
from pipeline.lora.embeddings import load_embedding
from pipeline.lora.inspection import inspect_file
from tests.pipeline.convert import pickles


def leftovers(folder: Path) -> list[str]:
    """Files a conversion may have left: outputs and hidden partial files."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors"))


def test_an_a1111_embedding_becomes_emb_params(tmp_path: Path) -> None:
    vectors = pickles.a1111_embedding(tmp_path / "bad-hands-5.pt")
    done = convert_file(tmp_path / "bad-hands-5.pt")
    assert done.output == tmp_path / "bad-hands-5.safetensors"
    assert done.report | {"kind": "embedding", "vectors": 6, "width": 768} == done.report
    loaded = load_embedding(done.output, 768)
    assert loaded.token is None and torch.equal(loaded.vectors, vectors)
    assert inspect_file(done.output).ok
    assert leftovers(tmp_path) == ["bad-hands-5.safetensors"]


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "subprocess"])
def test_code_in_a_pickle_never_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "marker"
    evil = pickles.torch_saved(tmp_path / "evil.pt", pickles.payloads(marker)[payload])
    with pytest.raises(UserError, match="it could run code, refused"):
        convert_file(evil)
    assert not marker.exists() and leftovers(tmp_path) == []


def test_the_child_refuses_code_even_when_the_scan_is_bypassed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights-only unpickler is the second wall: with the scan gone, still nothing runs."""
    monkeypatch.setattr(sandbox, "scan_path", lambda path: None)
    marker = tmp_path / "marker"
    payload = pickle.dumps(pickles.payloads(marker)["os.system"], protocol=2)
    evil = pickles.zip_with_data_pkl(tmp_path / "swapped.pt", payload)
    with pytest.raises(UserError, match=r"weights-only loader \(.*GLOBAL posix\.system"):
        convert_file(evil)
    assert not marker.exists() and leftovers(tmp_path) == []


def test_a_storage_claiming_gigabytes_hits_the_memory_limit(tmp_path: Path) -> None:
    claiming = pickles.legacy_claiming(tmp_path / "claims.pth", elements=2**30)  # 4 GiB
    with pytest.raises(UserError, match=r"needs more than 1\.0 GiB of memory"):
        convert_file(claiming)
    assert leftovers(tmp_path) == []


def test_a_load_past_the_time_limit_is_stopped_and_leaves_nothing(tmp_path: Path) -> None:
    pickles.a1111_embedding(tmp_path / "slow.pt")
    with pytest.raises(UserError, match=r"took longer than 0\.3 s to load: stopped"):
        convert_file(tmp_path / "slow.pt", limits=Limits(memory_bytes=2**30, seconds=0.3))
    assert leftovers(tmp_path) == []


def test_an_existing_output_is_kept_unless_forced(tmp_path: Path) -> None:
    pickles.a1111_embedding(tmp_path / "emb.pt")
    (tmp_path / "emb.safetensors").write_bytes(b"mine")
    with pytest.raises(UserError, match="already exists: use --force"):
        convert_file(tmp_path / "emb.pt")
    assert (tmp_path / "emb.safetensors").read_bytes() == b"mine"
    convert_file(tmp_path / "emb.pt", force=True)
    assert load_embedding(tmp_path / "emb.safetensors", 768).vectors.shape == (6, 768)
    assert leftovers(tmp_path) == ["emb.safetensors"]


def test_limits_grow_with_the_file() -> None:
    small, large = Limits.for_size(0), Limits.for_size(4 * 1024**3)
    assert small.memory_bytes == 1024**3 and large.memory_bytes == 13 * 1024**3
    assert small.seconds < large.seconds
