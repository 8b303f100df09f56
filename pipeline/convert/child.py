"""The sandboxed half of `dreamcord convert`, run as `python -m pipeline.convert.child`.

Arguments: SOURCE TARGET BUDGET (bytes of memory it may use beyond its start-up size).

It caps its own address space, loads SOURCE with torch's weights-only unpickler, refuses anything
but tensors and plain containers, and writes the recognised layout to TARGET as `.safetensors`.
It answers with one JSON line on stdout, never a pickle: `{"kind": ..., ...}` with exit code 0,
or `{"error": ...}` with exit code 2. Any other ending is a crash the parent reports.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.convert.layouts import check_plain, own_tensors, recognise
from pipeline.errors import UserError

REFUSED = 2
GIB = 1024**3
_WEIGHTS_ONLY_PREFACE = "Weights only load failed"


def limit_memory(budget: int) -> None:
    """Allow `budget` bytes of address space beyond what the interpreter and torch already map.

    Counting from the current size, not from zero, keeps the limit about the file: torch alone
    maps gigabytes of libraries that loading never touches.
    """
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    limit = mapped + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def convert(source: Path, target: Path) -> dict[str, object]:
    """Load, check, recognise and write; the report for the parent."""
    obj = torch.load(source, map_location="cpu", weights_only=True)
    check_plain(obj, source.name)
    converted = recognise(obj, source.name)
    del obj
    if not converted.tensors:
        raise UserError(f"{source.name} holds no tensors to convert")
    if not all(isinstance(key, str) for key in converted.tensors):
        raise UserError(f"{source.name} names some tensors with numbers, not text: refused")
    tensors = own_tensors(converted.tensors)
    save_file(tensors, str(target), metadata=converted.metadata or None)
    dtypes = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in tensors.values()})
    return {"kind": converted.kind, "tensors": len(tensors), "dtypes": dtypes, **converted.facts}


def _failure(error: BaseException, budget: int, name: str) -> str:
    """Words for what torch raised; the weights-only unpickler's own reason when it gave one."""
    text = str(error)
    if isinstance(error, MemoryError) or "can't allocate memory" in text:
        return (
            f"{name} needs more than {budget / GIB:.1f} GiB of memory to load: it claims more "
            "than its size, refused"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith(_WEIGHTS_ONLY_PREFACE):
        # The first and last paragraphs are torch's advice to load unsafely; the middle says why.
        reason = lines[1] if len(lines) > 2 else lines[0]
        return f"{name} was refused by torch's weights-only loader ({reason})"
    return f"{name} could not be loaded by torch ({lines[0] if lines else type(error).__name__})"


def main(argv: list[str]) -> int:
    source, target, budget = Path(argv[0]), Path(argv[1]), int(argv[2])
    torch.set_num_threads(1)
    limit_memory(budget)
    try:
        report: dict[str, object] = convert(source, target)
        code = 0
    except UserError as error:
        report, code = {"error": str(error)}, REFUSED
    except Exception as error:  # whatever torch raises (MemoryError too) refuses this file
        report, code = {"error": _failure(error, budget, source.name)}, REFUSED
    print(json.dumps(report), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
