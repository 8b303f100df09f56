"""Hostile bytes and damaged kohya LoRAs: the inspector answers with a verdict or a UserError,
never another exception, within bounded time and memory.

The valid file is written the way kohya sd-scripts writes a LoRA (`lora_unet_...`/`lora_te_...`
modules with `lora_down`/`lora_up` factors and a scalar `.alpha`, kohya's training metadata); the
mutations are what a cut download, a broken trainer or an attacker produce.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.lora.inspection import Inspection, inspect_file
from tests.bot.library_files import WIDTH, write_lora

MAX_SECONDS = 5.0
MAX_PYTHON_BYTES = 64 * 1024**2
"""Far above what a few-KB file needs, far below what an unchecked header length would take."""

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = st.sampled_from(["dtype", "shape", "data_offsets", "extra"])


def inspect_within_bounds(path: Path) -> Inspection | UserError:
    """Inspect `path`, asserting the bounds; a UserError is returned as the refusal it is."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        return inspect_file(path, WIDTH)
    except UserError as refusal:
        return refusal
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert time.monotonic() - started < MAX_SECONDS
        assert peak < MAX_PYTHON_BYTES


def assert_refused_or_judged(outcome: Inspection | UserError) -> None:
    if isinstance(outcome, Inspection):
        assert outcome.ok or outcome.reason
    else:
        assert str(outcome)


@pytest.fixture(scope="module")
def kohya_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_lora(tmp_path_factory.mktemp("kohya") / "valid.safetensors")
    inspect_file(path, WIDTH)  # imports torch and builds the reference index once, untraced
    return path.read_bytes()


def split(raw: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def joined(header: object, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_the_valid_kohya_file_is_accepted(kohya_file: bytes, tmp_path: Path) -> None:
    path = tmp_path / "valid.safetensors"
    path.write_bytes(kohya_file)
    outcome = inspect_within_bounds(path)
    assert isinstance(outcome, Inspection) and outcome.ok, outcome


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_are_only_ever_refused(
    tmp_path: Path, kohya_file: bytes, data: bytes
) -> None:
    path = tmp_path / "any.safetensors"
    path.write_bytes(data)
    assert_refused_or_judged(inspect_within_bounds(path))


@FUZZ
@given(length=st.integers(0, 2**64 - 1), body=st.binary(max_size=64))
def test_any_declared_header_length_is_refused_without_reading_it(
    tmp_path: Path, kohya_file: bytes, length: int, body: bytes
) -> None:
    path = tmp_path / "length.safetensors"
    path.write_bytes(struct.pack("<Q", length) + body)
    assert_refused_or_judged(inspect_within_bounds(path))


@FUZZ
@given(at=st.integers(0, 10**9), value=st.integers(0, 255), cut=st.booleans())
def test_a_flipped_or_cut_byte_of_a_kohya_lora_is_only_ever_refused(
    tmp_path: Path, kohya_file: bytes, at: int, value: int, cut: bool
) -> None:
    at %= len(kohya_file)
    damaged = kohya_file[:at] if cut else kohya_file[:at] + bytes([value]) + kohya_file[at + 1 :]
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(damaged)
    assert_refused_or_judged(inspect_within_bounds(path))


@FUZZ
@given(pick=st.integers(0, 10**6), field=_FIELDS, value=_JSON)
def test_any_value_in_a_header_entry_of_a_kohya_lora_is_only_ever_refused(
    tmp_path: Path, kohya_file: bytes, pick: int, field: str, value: object
) -> None:
    header, data = split(kohya_file)
    keys = sorted(header)
    key = keys[pick % len(keys)]
    header[key][field] = value  # in `__metadata__` too, which must map text to text
    path = tmp_path / "entry.safetensors"
    path.write_bytes(joined(header, data))
    assert_refused_or_judged(inspect_within_bounds(path))


@pytest.mark.parametrize("word", ["Infinity", "-Infinity", "NaN"])
def test_a_header_with_a_word_json_lacks_is_refused_not_left_to_safetensors(
    tmp_path: Path, kohya_file: bytes, word: str
) -> None:
    """Python's json reads `Infinity` (what hypothesis found: `"extra": Infinity` in an entry);
    safetensors' own parser does not, so without the refusal opening the file raised."""
    header, data = split(kohya_file)
    key = next(key for key in sorted(header) if key != "__metadata__")
    header[key]["extra"] = float(word.replace("Infinity", "inf"))
    path = tmp_path / "entry.safetensors"
    path.write_bytes(joined(header, data))
    outcome = inspect_within_bounds(path)
    assert isinstance(outcome, UserError) or not outcome.ok
    assert "not JSON" in (str(outcome) if isinstance(outcome, UserError) else outcome.reason)


@FUZZ
@given(value=st.floats(width=32), shape=st.lists(st.integers(0, 3), max_size=3))
def test_any_alpha_of_a_kohya_lora_is_only_ever_refused_or_accepted(
    tmp_path: Path, kohya_file: bytes, value: float, shape: list[int]
) -> None:
    """A NaN, infinite or non-scalar `.alpha`, written where kohya writes its scalar."""
    header, data = split(kohya_file)
    alpha_key = next(key for key in sorted(header) if key.endswith(".alpha"))
    count = 1
    for dim in shape:
        count *= dim
    start = len(data)
    header[alpha_key] = {"dtype": "F32", "shape": shape, "data_offsets": [start, start + 4 * count]}
    old_start, old_end = split(kohya_file)[0][alpha_key]["data_offsets"]
    # The old alpha's 4 bytes are left as a gap; move the others down over it.
    for key, entry in header.items():
        if key != "__metadata__" and key != alpha_key and entry["data_offsets"][0] >= old_end:
            entry["data_offsets"] = [o - (old_end - old_start) for o in entry["data_offsets"]]
    data = data[:old_start] + data[old_end:]
    header[alpha_key]["data_offsets"] = [len(data), len(data) + 4 * count]
    path = tmp_path / "alpha.safetensors"
    path.write_bytes(joined(header, data + struct.pack("<f", value) * count))
    outcome = inspect_within_bounds(path)
    assert_refused_or_judged(outcome)
    if shape not in ([], [1], [1, 1], [1, 1, 1]) or value != value or abs(value) == float("inf"):
        assert isinstance(outcome, UserError) or not outcome.ok


@pytest.mark.parametrize(
    ("metadata", "says"),
    [
        ({"ss_tag_frequency": "[" * 100_000}, None),
        ({"ss_tag_frequency": '{"a": {"b": ' + "9" * 5000 + "}}"}, None),
    ],
)
def test_hostile_training_metadata_is_ignored(
    tmp_path: Path, kohya_file: bytes, metadata: dict[str, str], says: str | None
) -> None:
    header, data = split(kohya_file)
    header["__metadata__"].update(metadata)
    path = tmp_path / "metadata.safetensors"
    path.write_bytes(joined(header, data))
    outcome = inspect_within_bounds(path)
    assert isinstance(outcome, Inspection) and outcome.ok and outcome.triggers == ()


@pytest.mark.parametrize(
    ("raw_header", "says"),
    [
        ('{"a": {"dtype": "F32", "shape": [' + "9" * 5000 + "]}}", "number too long"),
        ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
         '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "twice"),
        ('{"' + "a" * 100_000 + '": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
         "tensor name of 100,000 characters"),
    ],
)  # fmt: skip
def test_a_crafted_header_is_refused_with_what_is_wrong(
    tmp_path: Path, kohya_file: bytes, raw_header: str, says: str
) -> None:
    text = raw_header.encode()
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 4)
    outcome = inspect_within_bounds(path)
    reason = str(outcome) if isinstance(outcome, UserError) else outcome.reason
    assert reason and says in reason
