"""The opcode scan: what `torch.save` writes passes, every way of importing code is named."""

from __future__ import annotations

import contextlib
import io
import pickle
import pickletools
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.convert.scan import PickleFormat, scan, scan_path
from pipeline.errors import UserError
from tests.pipeline.convert import pickles


def test_files_torch_save_writes_pass_in_both_formats(tmp_path: Path) -> None:
    pickles.a1111_embedding(tmp_path / "emb.pt")
    pickles.a1111_hypernetwork(tmp_path / "hyper.pt")
    state = {"conv_first.weight": torch.zeros(2, 3).t(), "dtype_kept": torch.zeros(2).half()}
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert scan_path(tmp_path / "emb.pt") is PickleFormat.ZIP
    assert scan_path(tmp_path / "hyper.pt") is PickleFormat.ZIP
    assert scan_path(tmp_path / "legacy.pth") is PickleFormat.LEGACY


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "subprocess"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_a_payload_is_refused_by_name_in_either_protocol(
    tmp_path: Path, payload: str, protocol: int
) -> None:
    marker = tmp_path / "marker"
    evil = pickles.bare_pickle(tmp_path / "evil.pt", pickles.payloads(marker)[payload], protocol)
    named = {"os.system": "posix.system", "builtins.exec": "builtins.exec"}
    with pytest.raises(UserError, match="it could run code") as refused:
        scan_path(evil)
    assert named.get(payload, "subprocess.call") in str(refused.value)
    assert "nothing was loaded" in str(refused.value)
    assert not marker.exists()


def test_a_payload_inside_a_torch_save_archive_is_refused(tmp_path: Path) -> None:
    evil = pickles.torch_saved(
        tmp_path / "evil.ckpt", pickles.payloads(tmp_path / "m")["os.system"]
    )
    with pytest.raises(UserError, match=r"evil.ckpt imports posix.system: it could run code"):
        scan_path(evil)


def test_a_swapped_data_pkl_is_refused(tmp_path: Path) -> None:
    payload = pickle.dumps(pickles.payloads(tmp_path / "m")["subprocess"], protocol=2)
    evil = pickles.zip_with_data_pkl(tmp_path / "swapped.pt", payload)
    with pytest.raises(UserError, match=r"imports subprocess\.call"):
        scan_path(evil)


def test_a_custom_class_is_refused_by_its_name(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(2), "trainer": pickles.Custom()}, tmp_path / "c.pt")
    with pytest.raises(UserError, match=r"imports tests.pipeline.convert.pickles.Custom"):
        scan_path(tmp_path / "c.pt")


def _handmade(*ops: bytes) -> bytes:
    return b"\x80\x04" + b"".join(ops) + b"."


def _text(value: str) -> bytes:
    return b"\x8c" + bytes([len(value)]) + value.encode()


def test_an_import_through_the_memo_is_still_named() -> None:
    # 'posix' is memoized, buried under other values, then fetched back for STACK_GLOBAL.
    memoized = (_text("posix"), b"\x94", b"0", _text("system"), b"\x94", b"0")
    data = _handmade(*memoized, b"h\x00", b"h\x01", b"\x93")
    pickletools.dis(data, out=io.StringIO())  # a well-formed pickle, not a parsing trick
    with pytest.raises(UserError, match=r"imports posix\.system"):
        scan(io.BytesIO(data), "memo.pt", len(data))


def test_an_import_whose_name_cannot_be_known_is_refused() -> None:
    data = _handmade(_text("posix"), _text("system"), b"2", b"0", b"\x93")
    with pytest.raises(UserError, match="hides what it imports"):
        scan(io.BytesIO(data), "dup.pt", len(data))


def test_a_length_claiming_more_than_the_file_is_refused_unread() -> None:
    data = b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b"tiny"
    with pytest.raises(UserError, match="claims 4,611,686,018,427,387,904 bytes"):
        scan(io.BytesIO(data), "huge.pt", len(data))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"hello, I am a text file\n", "not a PyTorch pickle"),
        (b"PK\x03\x04" + bytes(60), "damaged zip archive"),
        (b"\x80\x02\xff\xfe garbage", "not a readable pickle"),
        (pickle.dumps({"weight": [0.0, 1.0]}, protocol=2), "plain Python pickle"),
        ((2).to_bytes(8, "little") + b"{}", "already a safetensors file: rename it"),
    ],
    ids=["text", "zip-garbage", "pickle-garbage", "plain-pickle", "safetensors"],
)
def test_files_that_are_not_torch_pickles_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(UserError, match=says):
        scan(io.BytesIO(data), "file.pt", len(data))


_GENUINE = pickle.dumps({"a": [1, 2.5, "x", None, True]}, protocol=4)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda tail: b"\x80" + tail),
        st.binary(max_size=300).map(lambda tail: b"PK\x03\x04" + tail),
        st.tuples(st.integers(0, len(_GENUINE) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda cut: _GENUINE[: cut[0]] + cut[1] + _GENUINE[cut[0] + len(cut[1]) :]
        ),
    )
)
def test_arbitrary_bytes_are_refused_never_crash_the_scanner(data: bytes) -> None:
    with contextlib.suppress(UserError):
        scan(io.BytesIO(data), "fuzz.pt", len(data))
