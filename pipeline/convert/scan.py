"""Refuse a pickle that imports anything beyond what torch needs to rebuild tensors.

The scan reads opcodes with `pickletools.genops`, which decodes but never executes them, so a
hostile file is named and refused before any unpickler sees it. It is a first line of defence: the
loader in the child still uses torch's weights-only unpickler, under memory and time limits.
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import IO, BinaryIO

from pipeline.errors import UserError

MAX_PICKLE_BYTES = 64 * 1024**2
"""The pickle part of even a 7 GB checkpoint is under 1 MB; tensor data lies outside it."""
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The number that opens a file `torch.save` wrote before torch 1.6 (`_use_new_zipfile...`)."""
LEGACY_PICKLES = 5
"""Magic number, protocol version, system info, the object, its storage keys; then raw data."""

_STORAGES = ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char", "Byte", "Bool")
_DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8")
ALLOWED_IMPORTS = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Tensor",
        "torch.Size",
        "torch.bool",
        *(f"torch.{kind}Storage" for kind in _STORAGES),
        *(f"torch.{dtype}" for dtype in _DTYPES),
    }
)
"""What `torch.save` writes for tensors, parameters and state dicts (found by disassembling its
files): rebuild functions, storage types, dtypes. Each is also on torch's weights-only list."""

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_EXTENSIONS = frozenset({"EXT1", "EXT2", "EXT4"})
_SCAN_ERRORS = (ValueError, EOFError, struct.error, OverflowError, UnicodeDecodeError)
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    ValueError,
    EOFError,
    OSError,
    zlib.error,
    struct.error,
    KeyError,
    UnicodeDecodeError,
)


class PickleFormat(Enum):
    """The two container formats `torch.load(weights_only=True)` reads."""

    ZIP = "zip"
    LEGACY = "legacy"


class _Bounded:
    """A reader that refuses a read past `limit` bytes instead of allocating what a length claims.

    A pickle opcode can claim a string of 2**63 bytes; reading it blindly would allocate that.
    """

    def __init__(self, file: IO[bytes], limit: int, name: str) -> None:
        self._file, self._left, self._name = file, limit, name
        self._position = 0

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._left
        elif size > self._left:
            raise UserError(
                f"{self._name} claims {size:,} bytes where at most {self._left:,} remain: "
                "it is broken or hostile, refused (nothing was loaded)"
            )
        data = self._file.read(size)
        self._left -= len(data)
        self._position += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        line = self._file.readline(limit)
        self._left -= len(line)
        self._position += len(line)
        return line


def scan(file: BinaryIO, name: str, size: int) -> PickleFormat:
    """Check the torch file in `file` (`size` bytes) without loading it; UserError says why not."""
    head = file.read(9)
    file.seek(0)
    if len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        raise UserError(f"{name} is already a safetensors file: rename it to .safetensors")
    if head.startswith(b"PK\x03\x04"):
        _scan_zip(file, name)
        return PickleFormat.ZIP
    if not head.startswith(b"\x80"):
        raise UserError(f"{name} is not a PyTorch pickle (no zip or pickle header): refused")
    if _is_tar(file):
        raise UserError(f"{name} is in torch's oldest (tar) format, which convert does not read")
    reader = _Bounded(file, min(size, MAX_PICKLE_BYTES), name)
    if not _check_opcodes(reader, name):
        raise UserError(
            f"{name} is a plain Python pickle, not a file torch.save wrote: refused "
            "(nothing was loaded)"
        )
    for _ in range(LEGACY_PICKLES - 1):
        _check_opcodes(reader, name)
    return PickleFormat.LEGACY


def scan_path(path: Path) -> PickleFormat:
    """`scan` for a file on disk."""
    try:
        with path.open("rb") as file:
            return scan(file, path.name, path.stat().st_size)
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror or error})") from None


def _scan_zip(file: BinaryIO, name: str) -> None:
    """Scan every pickle in the archive, duplicates included, since loaders may pick any one."""
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            names = [member.filename for member in members]
            if len(set(names)) != len(names):
                raise UserError(f"{name} is a zip with duplicate entries: refused")
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                raise UserError(f"{name} is a TorchScript program, not weights: refused")
            pickles = [member for member in members if member.filename.endswith(".pkl")]
            if not any(member.filename.endswith("/data.pkl") for member in pickles):
                raise UserError(f"{name} is a zip archive but not one torch.save wrote: refused")
            for member in pickles:
                with archive.open(member) as stream:
                    _check_opcodes(_Bounded(stream, MAX_PICKLE_BYTES, name), name)
    except _ZIP_ERRORS as error:
        raise UserError(f"{name} is a damaged zip archive ({error}): refused") from None


def _is_tar(file: BinaryIO) -> bool:
    try:
        with tarfile.open(fileobj=file, mode="r:"):
            return True
    except (tarfile.TarError, ValueError, EOFError, OSError, UnicodeDecodeError):
        return False
    finally:
        file.seek(0)


def _opcodes(reader: _Bounded, name: str) -> Iterator[tuple[pickletools.OpcodeInfo, object]]:
    try:
        for opcode, arg, _ in pickletools.genops(reader):  # type: ignore[arg-type]
            yield opcode, arg
    except _SCAN_ERRORS as error:
        raise UserError(f"{name} is not a readable pickle ({error}): refused") from None


def _check_opcodes(reader: _Bounded, name: str) -> bool:
    """Refuse the first import outside `ALLOWED_IMPORTS`, through any opcode that imports.

    STACK_GLOBAL takes its module and name from the stack, so the two strings pushed just before
    it (directly or from the memo) are tracked; an import whose name cannot be known is refused.
    Returns whether the pickle was only torch's legacy magic number.
    """
    memo: dict[object, str | None] = {}
    recent: list[str | None] = []
    """The values the last opcodes pushed, when they were strings (None: not a string)."""
    shape: list[object] = []
    """The first opcodes and arguments, enough to tell the legacy magic number."""
    protocol = 0
    for opcode, arg in _opcodes(reader, name):
        op = opcode.name
        if op not in ("PROTO", "FRAME") and len(shape) < 3:
            shape.append(arg if op == "LONG1" else op)
        if op == "PROTO" and isinstance(arg, int):
            protocol = arg
        elif op in ("GLOBAL", "INST"):
            module, _, attribute = str(arg).partition(" ")
            _check_import(module, attribute, protocol, name)
        elif op == "STACK_GLOBAL":
            if len(recent) < 2 or recent[-1] is None or recent[-2] is None:
                raise UserError(f"{name} hides what it imports: it could run code, refused")
            _check_import(recent[-2], recent[-1], protocol, name)
        elif op in _EXTENSIONS:
            raise UserError(f"{name} imports through the extension registry: refused")
        if op in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
            recent = [*recent[-1:], value]
        elif op in _MEMO_GETS:
            recent = [*recent[-1:], memo.get(arg)]
        elif op in _MEMO_PUTS:
            memo[arg] = recent[-1] if recent else None
        elif op == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif op not in ("FRAME", "PROTO"):
            recent = [*recent[-1:], None]
    return shape == [LEGACY_MAGIC, "STOP"]


def _check_import(module: str, attribute: str, protocol: int, name: str) -> None:
    """Judge the name the unpickler would import: below protocol 3 it maps Python 2's names."""
    if protocol < 3:
        module, attribute = _compat_pickle.NAME_MAPPING.get(
            (module, attribute), (_compat_pickle.IMPORT_MAPPING.get(module, module), attribute)
        )
    imported = f"{module}.{attribute}"
    if imported not in ALLOWED_IMPORTS:
        raise UserError(
            f"{name} imports {imported}: it could run code, refused (nothing was loaded)"
        )
