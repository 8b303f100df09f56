"""The worker protocol: every message survives a round trip, and nothing else parses.

The round trip's other end is plain `json`: a message's bytes are checked as JSON text of the
documented shape, not only fed back to `decode`.
"""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.backend import ImageTask
from pipeline.memory import MemoryModel
from pipeline.remote.messages import (
    FILE_KINDS,
    VERSION,
    Batch,
    Cancel,
    Failure,
    Heartbeat,
    Message,
    MessageError,
    Progress,
    Result,
    decode,
    encode,
)
from pipeline.request import GenerationRequest, HiresSpec, LoraRef

text = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
sha256 = st.text("0123456789abcdef", min_size=64, max_size=64)
requests = st.builds(
    GenerationRequest,
    prompt=text,
    negative=text,
    width=st.sampled_from([64, 512, 768]),
    seed=st.integers(0, 2**53 - 1),
    count=st.integers(1, 4),
    loras=st.lists(st.builds(LoraRef, name=text, te_weight=finite), max_size=2).map(tuple),
    hires=st.none() | st.builds(HiresSpec, scale=st.floats(1, 2)),
)
tasks = st.builds(ImageTask, job_id=text, index=st.integers(0, 15), request=requests)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Batch,
        batch_id=text,
        worker=text,
        tasks=st.lists(tasks, max_size=3).map(tuple),
        manifest=st.dictionaries(
            st.sampled_from(FILE_KINDS), st.dictionaries(text, sha256, max_size=2), max_size=2
        ),
    ),
    st.builds(
        Result,
        batch_id=text,
        job_id=text,
        index=st.integers(0, 15),
        png=st.binary(max_size=64),
        seed=st.integers(-(2**63), 2**63),
        timings=st.dictionaries(text, finite, max_size=3),
        flagged=st.none() | st.booleans(),
        worker=text,
    ),
    st.builds(
        Progress,
        batch_id=text,
        step=st.integers(0, 1000),
        total=st.integers(0, 1000),
        previews=st.lists(st.binary(max_size=32), max_size=3).map(tuple),
    ),
    st.builds(
        Failure,
        batch_id=text,
        kind=st.sampled_from(["out_of_memory", "user_error", "error", "interrupted"]),
        text=text,
        worker=text,
    ),
    st.builds(Cancel, batch_id=text),
    st.builds(
        Heartbeat,
        name=text,
        device=text,
        cuda_device=st.none() | text,
        memory=st.builds(MemoryModel, fixed_bytes=finite, image_bytes_per_pixel=finite),
        budget_bytes=st.integers(0, 2**50),
        default_model=text,
        models=st.lists(text, max_size=3).map(tuple),
        files=st.lists(sha256, max_size=3).map(tuple),
        state=st.sampled_from(["idle", "busy", "stopping"]),
        batch_id=st.none() | text,
        images_per_s=finite,
        time=finite,
    ),
)


@given(messages)
def test_every_message_survives_a_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@given(messages)
def test_a_message_is_one_json_object_with_its_version_and_type(message: Message) -> None:
    body = json.loads(encode(message))
    assert body["v"] == VERSION
    assert body["type"] == type(message).TYPE


def test_a_result_carries_its_png_as_base64_and_a_batch_its_requests_as_request_json() -> None:
    request = GenerationRequest("a fox", width=64, height=64, steps=2, count=2)
    batch = json.loads(encode(Batch("b1", "gpu-1", (ImageTask("j1", 1, request),))))
    assert batch["tasks"] == [{"job_id": "j1", "index": 1, "request": request.to_json()}]
    result = json.loads(encode(Result("b1", "j1", 1, b"\x89PNG", 8, {"unet": 1.5}, None, "w")))
    assert base64.b64decode(result["png"]) == b"\x89PNG"


@given(st.binary(max_size=200))
def test_garbage_bytes_raise_only_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=12,
)


@given(messages, st.data())
def test_a_message_with_one_field_changed_parses_or_raises_message_error(
    message: Message, data: st.DataObject
) -> None:
    body = json.loads(encode(message))
    name = data.draw(st.sampled_from(sorted(body)))
    body[name] = data.draw(json_values)
    with contextlib.suppress(MessageError):
        decode(json.dumps(body).encode())


@given(messages, st.data())
def test_a_message_with_a_field_missing_or_added_is_refused(
    message: Message, data: st.DataObject
) -> None:
    body = json.loads(encode(message))
    if data.draw(st.booleans()):
        del body[data.draw(st.sampled_from(sorted(set(body) - {"v", "type"})))]
    else:
        body["surprise"] = 1
    with pytest.raises(MessageError, match=r"missing fields|unknown fields"):
        decode(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"v": 2, "type": "cancel", "batch_id": "b"}', "schema version 2; this side reads 1"),
        (b'{"v": true, "type": "cancel", "batch_id": "b"}', "schema version True"),
        (b'{"v": 1, "type": ["cancel"], "batch_id": "b"}', "unknown message type"),
        (b'{"v": 1, "type": "cancel", "batch_id": 5}', "cancel.batch_id: 5 is not text"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (
            b'{"v": 1, "type": "progress", "batch_id": "b", "step": 1, "total": 2,'
            b' "previews": ["@@"]}',
            "progress.previews: not base64",
        ),
        (
            b'{"v": 1, "type": "batch", "batch_id": "b", "worker": "w", "manifest": {},'
            b' "tasks": [{"job_id": "j", "index": 0, "request": "{\\"prompt\\": 1, \\"x\\": 2}"}]}',
            "batch.tasks: a task's request does not parse",
        ),
        (
            b'{"v": 1, "type": "batch", "batch_id": "b", "worker": "w", "tasks": [],'
            b' "manifest": {"loras": {"ghibli": "abc"}}}',
            "loras 'ghibli': 'abc' is not a sha256",
        ),
        (
            b'{"v": 1, "type": "failure", "batch_id": "b", "kind": "oops", "text": "",'
            b' "worker": "w"}',
            "failure.kind: 'oops' is not one of",
        ),
    ],
)
def test_what_is_wrong_is_said(data: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error.replace("[", "\\[").replace("(", "\\(")):
        decode(data)
