"""`dreamcord convert FILE`: turn a trusted pickle into `.safetensors`, on the host only.

The work happens in `pipeline.convert`: an opcode scan, then a sandboxed child process. This
module only parses the command line and says what was found and what to do with the result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.settings import Settings

if TYPE_CHECKING:
    from pipeline.convert.sandbox import Conversion

DESCRIPTION = """\
Convert a .pt, .pth, .ckpt or .bin file you trust into .safetensors, the only format Dreamcord's
libraries take: A1111 and diffusers embeddings, A1111 hypernetworks, SD checkpoints (EMA copies
dropped), VAEs, ESRGAN-family upscalers and LoRAs. The pickle's opcodes are scanned first, and it is
loaded with torch's weights-only loader in a child process with memory and time limits. This is
a host command only: files uploaded in Discord never reach it.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="turn a trusted .pt/.pth/.ckpt/.bin pickle into .safetensors (host files only)",
        description=DESCRIPTION,
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the pickle to convert")
    parser.add_argument(
        "--out", type=Path, metavar="FILE.safetensors", help="where to write (default: beside FILE)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=convert)


def convert(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here so that `dreamcord --help` stays light.
    from pipeline.convert.sandbox import convert_file

    done = convert_file(args.file, args.out, force=args.force)
    if args.json:
        document = {"source": str(done.source), "output": str(done.output), **done.report}
        print(json.dumps(document, ensure_ascii=False))
    else:
        print(f"{done.source.name}: {describe(done)} -> {done.output}{next_step(done, settings)}")
    return 0


def describe(done: Conversion) -> str:
    """What the file turned out to be, in the words of the guides."""
    report = done.report
    tensors = f"{report['tensors']} tensors"
    if done.kind == "embedding":
        vectors = f"{report['vectors']} vector" + ("s" if report["vectors"] != 1 else "")
        shape = f"{vectors} (width {report['width']})"
        if "token" in report:
            return f"a diffusers embedding of {shape} for the token {report['token']!r}"
        return f"an A1111 embedding of {shape}"
    if done.kind == "hypernetwork":
        widths = ", ".join(map(str, report["widths"]))
        return f"an A1111 hypernetwork for widths {widths} ({tensors})"
    if done.kind == "checkpoint":
        dropped = _dropped(report)
        return f"an SD checkpoint of {tensors}" + (f" (dropped {dropped})" if dropped else "")
    if done.kind == "vae":
        dropped = f", dropped {report['dropped']} training entries" if report["dropped"] else ""
        return f"a VAE ({tensors}{dropped})"
    if done.kind == "upscaler":
        return f"an ESRGAN-family upscaler in the {report['layout']} layout ({tensors})"
    return f"a LoRA of {tensors}"


def _dropped(report: dict[str, Any]) -> str:
    """What of a training checkpoint was left out: EMA copies, non-tensors, top-level fields."""
    parts = [f"{report['dropped_ema']} EMA weights"] if report["dropped_ema"] else []
    if report["dropped_other"]:
        parts.append(f"{report['dropped_other']} non-tensor entries")
    if report["ignored_fields"]:
        parts.append("the fields " + ", ".join(report["ignored_fields"]))
    return "; ".join(parts)


def next_step(done: Conversion, settings: Settings) -> str:
    """How to use the new file, as a tail of the report line ("" when there is no command)."""
    out = done.output
    steps = {
        "embedding": f"add it with `dreamcord embedding add {out}`",
        "checkpoint": f"use it with MODEL={out} or `dreamcord generate --model {out}`",
        "vae": f"use it with VAE={out}",
        "upscaler": f"move it to {settings.data_dir / 'upscalers'}/ to use it",
        "lora": f"add it with `dreamcord lora add {out}`",
    }
    return f"; {steps[done.kind]}" if done.kind in steps else ""
