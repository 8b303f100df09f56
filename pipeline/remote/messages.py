"""The one protocol between the bot and its workers: versioned JSON messages, parsed strictly.

Every message is one JSON object with its schema version `v`, its `type` and exactly the
fields of its type; binary parts (PNGs, WebP previews) are base64 text. `decode` turns
anything that is not such a message, whatever the bytes, into one `MessageError`, so a
consumer can dead-letter garbage without guessing what else might be raised.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeAlias, get_args

from pipeline.backend import ImageTask
from pipeline.memory import MemoryModel
from pipeline.request import GenerationRequest

VERSION = 1

FailureKind = Literal["out_of_memory", "user_error", "error", "interrupted"]
"""Why a batch has no results: the device ran out of memory (the bot splits the batch), a
mistake its user can fix (the text says which), an internal error, or the worker stopped."""
WorkerState = Literal["idle", "busy", "stopping"]

FILE_KINDS = ("loras", "embeddings", "hypernetworks", "controlnets", "upscalers", "pictures")
"""The kinds of file a batch's manifest names by sha256: library files by their names, and
`pictures` (init images, masks, control maps, image prompts) by their paths on the bot."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class MessageError(ValueError):
    """Bytes that are not a message of this version: what is wrong, for the log."""


@dataclass(frozen=True)
class Batch:
    """Work for one worker: its image tasks, and the library files they name by sha256."""

    TYPE: ClassVar[str] = "batch"
    batch_id: str
    worker: str
    """The worker whose capacity sized the batch."""
    tasks: tuple[ImageTask, ...]
    manifest: dict[str, dict[str, str]] = field(default_factory=dict)
    """{kind: {name: sha256}}, kinds from FILE_KINDS: what the worker's file cache fetches."""


@dataclass(frozen=True)
class Result:
    """One finished image: its PNG with the A1111 parameters embedded."""

    TYPE: ClassVar[str] = "result"
    batch_id: str
    job_id: str
    index: int
    png: bytes
    seed: int
    timings: dict[str, float]
    flagged: bool | None
    worker: str


@dataclass(frozen=True)
class Progress:
    """A batch's latest step; `previews` holds one small WebP per task, in batch order, or none."""

    TYPE: ClassVar[str] = "progress"
    batch_id: str
    step: int
    total: int
    previews: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Failure:
    """A batch that ends without results (see FailureKind)."""

    TYPE: ClassVar[str] = "failure"
    batch_id: str
    kind: FailureKind
    text: str
    worker: str


@dataclass(frozen=True)
class Cancel:
    """Stop this batch at the next step boundary."""

    TYPE: ClassVar[str] = "cancel"
    batch_id: str


@dataclass(frozen=True)
class Heartbeat:
    """A worker's state: what the bot sizes, routes and shows by.

    `memory` and `budget_bytes` make the worker's `Capacity`; `models` are the loaded model
    names and `files` the sha256 of library files it holds (LoRA affinity); `images_per_s` is
    its measured speed, `time` the wall clock when sent.
    """

    TYPE: ClassVar[str] = "heartbeat"
    name: str
    device: str
    cuda_device: str | None
    memory: MemoryModel
    budget_bytes: int
    default_model: str
    models: tuple[str, ...]
    files: tuple[str, ...]
    state: WorkerState
    batch_id: str | None
    images_per_s: float
    time: float


Message: TypeAlias = Batch | Result | Progress | Failure | Cancel | Heartbeat


def encode(message: Message) -> bytes:
    """The message as one JSON object (see the module docstring)."""
    body: dict[str, Any] = {"v": VERSION, "type": message.TYPE}
    for name, (write, _read) in _FIELDS[type(message)].items():
        body[name] = write(getattr(message, name))
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode(data: bytes) -> Message:
    """The message in `data`, or MessageError saying what is wrong with it."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MessageError(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    version, name = body.get("v"), body.get("type")
    if type(version) is not int or version != VERSION:
        raise MessageError(f"schema version {version!r}; this side reads {VERSION}")
    kind = _TYPES.get(name) if isinstance(name, str) else None
    if kind is None:
        raise MessageError(f"unknown message type {body.get('type')!r}")
    fields = _FIELDS[kind]
    given = set(body) - {"v", "type"}
    if given != set(fields):
        missing, extra = sorted(set(fields) - given), sorted(given - set(fields))
        raise MessageError(f"{kind.TYPE}: missing fields {missing}, unknown fields {extra}")
    values = {}
    for name, (_write, read) in fields.items():
        try:
            values[name] = read(body[name])
        except MessageError as error:
            raise MessageError(f"{kind.TYPE}.{name}: {error}") from None
    return kind(**values)


# Field readers: each checks one JSON value and returns it typed, or raises MessageError.


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise MessageError(f"{value!r} is not text")
    return value


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{value!r} is not a whole number")
    return value


def _count(value: object) -> int:
    number = _whole(value)
    if number < 0:
        raise MessageError(f"{number} is negative")
    return number


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(f"{value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise MessageError(f"{value!r} is not a finite number")
    return number


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise MessageError(f"{value!r} is not true or false")
    return value


def _optional(read: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda value: None if value is None else read(value)


def _blob(value: object) -> bytes:
    try:
        return base64.b64decode(_text(value), validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("not base64") from None


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise MessageError(f"{value!r} is not a list")
    return value


def _object(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MessageError(f"{value!r} is not an object")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def read(value: object) -> str:
        if value not in choices:
            raise MessageError(f"{value!r} is not one of {', '.join(choices)}")
        return str(value)

    return read


def _task(value: object) -> ImageTask:
    task = _object(value)
    if set(task) != {"job_id", "index", "request"}:
        raise MessageError(f"a task has the fields job_id, index, request, not {sorted(task)}")
    try:
        request = GenerationRequest.from_json(_text(task["request"]))
    except MessageError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise MessageError(f"a task's request does not parse: {error!r}") from None
    return ImageTask(_text(task["job_id"]), _count(task["index"]), request)


def _manifest(value: object) -> dict[str, dict[str, str]]:
    manifest = {}
    for kind, files in _object(value).items():
        if kind not in FILE_KINDS:
            raise MessageError(f"{kind!r} is not a file kind ({', '.join(FILE_KINDS)})")
        named = {}
        for name, sha256 in _object(files).items():
            if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
                raise MessageError(f"{kind} {name!r}: {sha256!r} is not a sha256 in hex")
            named[name] = sha256
        manifest[kind] = named
    return manifest


def _timings(value: object) -> dict[str, float]:
    return {name: _number(seconds) for name, seconds in _object(value).items()}


def _memory(value: object) -> MemoryModel:
    terms = _object(value)
    names = {term.name for term in dataclasses.fields(MemoryModel)}
    if set(terms) != names:
        raise MessageError(f"the memory model has the terms {sorted(names)}, not {sorted(terms)}")
    return MemoryModel(**{name: _number(terms[name]) for name in names})


# Writers turn a field into JSON; most fields are JSON already.


def _same(value: Any) -> Any:
    return value


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


_Field = tuple[Callable[[Any], Any], Callable[[object], Any]]
_FIELDS: dict[type, dict[str, _Field]] = {
    Batch: {
        "batch_id": (_same, _text),
        "worker": (_same, _text),
        "tasks": (
            lambda tasks: [
                {"job_id": t.job_id, "index": t.index, "request": t.request.to_json()}
                for t in tasks
            ],
            lambda value: tuple(_task(task) for task in _list(value)),
        ),
        "manifest": (_same, _manifest),
    },
    Result: {
        "batch_id": (_same, _text),
        "job_id": (_same, _text),
        "index": (_same, _count),
        "png": (_b64, _blob),
        "seed": (_same, _whole),
        "timings": (_same, _timings),
        "flagged": (_same, _optional(_flag)),
        "worker": (_same, _text),
    },
    Progress: {
        "batch_id": (_same, _text),
        "step": (_same, _count),
        "total": (_same, _count),
        "previews": (
            lambda blobs: [_b64(blob) for blob in blobs],
            lambda value: tuple(_blob(blob) for blob in _list(value)),
        ),
    },
    Failure: {
        "batch_id": (_same, _text),
        "kind": (_same, _one_of(get_args(FailureKind))),
        "text": (_same, _text),
        "worker": (_same, _text),
    },
    Cancel: {"batch_id": (_same, _text)},
    Heartbeat: {
        "name": (_same, _text),
        "device": (_same, _text),
        "cuda_device": (_same, _optional(_text)),
        "memory": (dataclasses.asdict, _memory),
        "budget_bytes": (_same, _count),
        "default_model": (_same, _text),
        "models": (list, lambda value: tuple(_text(name) for name in _list(value))),
        "files": (list, lambda value: tuple(_text(sha) for sha in _list(value))),
        "state": (_same, _one_of(get_args(WorkerState))),
        "batch_id": (_same, _optional(_text)),
        "images_per_s": (_same, _number),
        "time": (_same, _number),
    },
}
_TYPES: Mapping[str, type[Message]] = {kind.TYPE: kind for kind in _FIELDS}  # type: ignore[attr-defined]
