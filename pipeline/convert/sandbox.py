"""Convert a pickle in a child process under memory and time limits, and publish the result.

This side never unpickles anything and never imports torch: it scans the file's opcodes, starts
`pipeline.convert.child`, checks the `.safetensors` file the child wrote (its only way of handing
back tensors) and renames it into place, so no half-written output survives any failure.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline
from pipeline.convert.scan import scan_path
from pipeline.errors import UserError
from pipeline.lora.header import read_header

GIB = 1024**3
MEMORY_BASE = 1 * GIB
MEMORY_PER_FILE_BYTE = 3
"""Loading holds the tensors (1x the file), cloning views and shared tensors up to 1x more, and
`save_file` a bytes copy of each tensor (1x); the base covers allocator arenas and zip buffers."""
SECONDS_BASE = 60.0
SECONDS_PER_GIB = 60.0
"""Start-up (importing torch) plus reading and writing at a slow disk's 50 MB/s, with room."""


@dataclass(frozen=True)
class Limits:
    """What the child may use: address space beyond its start-up size, and wall-clock time."""

    memory_bytes: int
    seconds: float

    @classmethod
    def for_size(cls, size: int) -> Limits:
        return cls(
            MEMORY_BASE + MEMORY_PER_FILE_BYTE * size, SECONDS_BASE + SECONDS_PER_GIB * size / GIB
        )


@dataclass(frozen=True)
class Conversion:
    """A finished conversion: where it went and what the child found (`kind`, counts, ...)."""

    source: Path
    output: Path
    report: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.report["kind"])


def default_output(source: Path) -> Path:
    return source.with_suffix(".safetensors")


def convert_file(
    source: Path, output: Path | None = None, *, force: bool = False, limits: Limits | None = None
) -> Conversion:
    """Convert `source` to `output` (default: beside it); UserError says why it was refused."""
    output = output or default_output(source)
    _check_paths(source, output, force)
    scan_path(source)
    limits = limits or Limits.for_size(source.stat().st_size)
    partial = output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial.safetensors")
    try:
        report = _run_child(source, partial, limits)
        header = read_header(partial)
        if len(header.tensors) != report.get("tensors"):
            raise UserError(f"{source.name}: the converted file does not match what was loaded")
        if output.exists() and not force:
            raise UserError(f"{output} already exists: use --force to replace it")
        _publish(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return Conversion(source, output, report)


def _publish(partial: Path, output: Path) -> None:
    """Rename into place with the permissions a new file gets (safetensors writes owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o666 & ~umask)
    os.replace(partial, output)


def _check_paths(source: Path, output: Path, force: bool) -> None:
    if not source.is_file():
        raise UserError(f"{source} does not exist or is not a file")
    if source.suffix.lower() == ".safetensors":
        raise UserError(f"{source.name} is already a .safetensors file: nothing to convert")
    if output.suffix.lower() != ".safetensors":
        raise UserError(f"{output}: the output must be a .safetensors file")
    if not output.parent.is_dir():
        raise UserError(f"{output.parent} is not a folder: create it first")
    if output.exists() and not force:
        raise UserError(f"{output} already exists: use --force to replace it")


def _run_child(source: Path, partial: Path, limits: Limits) -> dict[str, Any]:
    root = str(Path(pipeline.__file__).resolve().parent.parent)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-P", "-m", "pipeline.convert.child"]
    command += [str(source), str(partial), str(limits.memory_bytes)]
    try:
        done = subprocess.run(
            command,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=limits.seconds,
        )
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{source.name} took longer than {limits.seconds:g} s to load: stopped, "
            "nothing was written"
        ) from None
    report = _last_json_line(done.stdout)
    if done.returncode == 0 and "kind" in report:
        return report
    if "error" in report:
        raise UserError(str(report["error"]))
    raise UserError(f"{source.name} crashed the loader ({_ending(done)}): nothing was written")


def _last_json_line(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return report if isinstance(report, dict) else {}


def _ending(done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode < 0:
        try:
            return f"killed by {signal.Signals(-done.returncode).name}"
        except ValueError:
            return f"killed by signal {-done.returncode}"
    last = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
    return last[0][:200]
