"""Read a `.safetensors` header by hand, so a hostile or broken file is refused before any loader.

safetensors itself checks the layout, but only after trusting the header length and without saying
in user words what the file really is (a renamed pickle, a PNG, a cut-off download).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.lora.untrusted_json import DuplicateKey, parse_json

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""A LoRA header is a few hundred KB at most; a bigger claimed length is an attack or garbage."""
MAX_TENSOR_NAME = 512
"""Trainers' longest names are under 200 characters; refusals quote names, so they stay short."""

DTYPE_BYTES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}

# First bytes of the formats people most often rename to .safetensors by mistake or on purpose.
_FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (a PyTorch .ckpt/.pt checkpoint?)"),
    (b"\x80", "a Python pickle (.ckpt/.pt/.bin)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a WebP image"),
    (b"<", "an HTML or XML page (a download error page?)"),
)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the data section, as the header declares it."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    """A validated safetensors header: tensor entries and the free-text metadata."""

    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    file_size: int


def read_header(path: Path) -> Header:
    """Parse and validate the header of `path`; raise UserError saying what is wrong."""
    if path.suffix.lower() != ".safetensors":
        raise UserError(
            f"{path.name} is not a .safetensors file: only .safetensors is accepted "
            "(.ckpt/.pt/.bin files are pickles that can run code)"
        )
    file_size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise _not_safetensors(head, path.name, "it is too short")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise _not_safetensors(head, path.name, "its header length is absurd")
        if 8 + length > file_size:
            raise UserError(f"{path.name} is truncated: its header runs past the end of the file")
        raw = file.read(length)
    try:
        document = parse_json(raw)
    except DuplicateKey as twice:  # one entry would hide another: no writer makes it
        raise UserError(
            f"{path.name} names {twice.key[:MAX_TENSOR_NAME]!r} twice in its header"
        ) from None
    except ValueError as malformed:
        raise _not_safetensors(head, path.name, f"its header {malformed}") from None
    if not isinstance(document, dict):
        raise UserError(f"{path.name} is not a safetensors file (its header is not an object)")
    if too_long := next((key for key in document if len(key) > MAX_TENSOR_NAME), None):
        raise UserError(
            f"{path.name} has a tensor name of {len(too_long):,} characters, which no trainer "
            "writes: refused"
        )
    metadata = _metadata(document.pop("__metadata__", {}), path.name)
    tensors = {name: _entry(name, spec, path.name) for name, spec in document.items()}
    _check_layout(tensors, file_size - 8 - length, path.name)
    return Header(tensors=tensors, metadata=metadata, file_size=file_size)


def _not_safetensors(head: bytes, name: str, symptom: str) -> UserError:
    """Name the real format when its magic bytes are known.

    Only consulted after the header failed to parse: a valid header length can itself begin with
    one of these bytes (0x80 is a plausible low byte), so magic alone must not refuse a file.
    """
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return UserError(f"{name} is {what} renamed to .safetensors: refused")
    return UserError(f"{name} is not a safetensors file ({symptom})")


def _metadata(value: object, name: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UserError(f"{name} has malformed metadata (it must map text to text)")
    return value


def _entry(tensor: str, spec: object, name: str) -> TensorEntry:
    bad = UserError(f"{name} has a malformed header entry for tensor {tensor!r}")
    if not isinstance(spec, dict):
        raise bad
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        shown = dtype if isinstance(dtype, str) else type(dtype).__name__
        raise UserError(f"{name}: tensor {tensor!r} has an unsupported dtype {shown[:20]!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise bad
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise UserError(f"{name}: tensor {tensor!r} has a size that does not match its shape")
    return TensorEntry(dtype=dtype, shape=tuple(shape), start=offsets[0], end=offsets[1])


def _check_layout(tensors: dict[str, TensorEntry], data_size: int, name: str) -> None:
    """Tensors must tile the data section without overlap; a short file means a cut download."""
    position = 0
    for entry in sorted(tensors.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise UserError(f"{name} has overlapping or scattered tensor data: refused")
        position = entry.end
    if position > data_size:
        raise UserError(
            f"{name} is truncated: its tensors need {position:,} bytes of data, "
            f"the file has {data_size:,} (download it again)"
        )
    if position < data_size:
        raise UserError(f"{name} has {data_size - position:,} stray bytes after its tensors")
