"""`dreamcord prompt`: show how a prompt is read (weights, LoRAs, flags, tokens) without a model."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.settings import Settings
from pipeline.errors import UserError
from pipeline.prompt import ParsedPrompt, PromptLimits, parse_prompt
from pipeline.prompt.attention import BREAK_WEIGHT
from pipeline.prompt.tags import NetworkTag
from pipeline.prompt.tokens import count_tokens


@dataclass(frozen=True)
class InstalledNames:
    """The LoRA, embedding and hypernetwork names a prompt may use."""

    loras: frozenset[str] = frozenset()
    embeddings: frozenset[str] = frozenset()
    hypernets: frozenset[str] = frozenset()


def installed_names(settings: Settings) -> InstalledNames:
    """The enabled LoRA, embedding and hypernetwork names in this server's registry."""
    from bot.container import open_database

    async def read() -> InstalledNames:
        db, repos = await open_database(settings)
        try:
            loras, embeddings = await repos.loras.names(), await repos.embeddings.names()
            hypernets = await repos.hypernetworks.names()
        finally:
            await db.close()
        return InstalledNames(frozenset(loras), frozenset(embeddings), frozenset(hypernets))

    return asyncio.run(read())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prompt",
        help="show how a prompt is read: weights, LoRAs, flags, tokens",
        description="Parse a prompt as the bot would, without loading a model.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("text", nargs="?", help="the prompt, with <lora:...> tags and --flags")
    source.add_argument("--batch", type=Path, help="a JSON array of prompts; prints a JSON array")
    parser.add_argument("--negative", default="", help="the negative prompt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--loras", default="", help="extra known LoRA names, comma-separated")
    parser.add_argument("--embeddings", default="", help="extra known embedding names, likewise")
    parser.add_argument("--hypernets", default="", help="extra known hypernetwork names, likewise")
    parser.set_defaults(handler=run)


def run(
    args: argparse.Namespace,
    settings: Settings,
    lookup: Callable[[Settings], InstalledNames] = installed_names,
) -> int:
    """Print the reading of one prompt or a batch; exit 0 when all are accepted, else 2."""
    known = lookup(settings)
    known = InstalledNames(
        known.loras | _names(args.loras),
        known.embeddings | _names(args.embeddings),
        known.hypernets | _names(args.hypernets),
    )
    limits = PromptLimits(
        max_steps=settings.max_steps,
        max_images=settings.max_images,
        max_pixels=settings.max_pixels,
    )

    def read(text: str, negative: str) -> ParsedPrompt:
        return parse_prompt(
            text,
            negative,
            known_loras=known.loras,
            known_embeddings=known.embeddings,
            known_hypernets=known.hypernets,
            limits=limits,
        )

    if args.batch is not None:
        results = [read(text, negative) for text, negative in _read_batch(args.batch)]
        print(json.dumps([_as_json(result) for result in results], ensure_ascii=False))
    elif args.text is not None:
        results = [read(args.text, args.negative)]
        if args.json:
            print(json.dumps(_as_json(results[0]), ensure_ascii=False))
        else:
            print(_as_table(results[0]))
    else:
        raise UserError("give a prompt, or --batch FILE with a JSON array of prompts")
    return 0 if all(result.ok for result in results) else 2


def _names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _read_batch(path: Path) -> list[tuple[str, str]]:
    """(prompt, negative) pairs from a JSON array of strings or {"prompt", "negative"} objects."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not isinstance(items, list):
        raise UserError(f"{path} must hold a JSON array of prompts")
    pairs = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            item = (item.get("prompt"), item.get("negative", ""))
        else:
            item = (item, "")
        if not all(isinstance(part, str) for part in item):
            raise UserError(
                f"{path}: item {index} must be a string or {{'prompt': ..., 'negative': ...}}"
            )
        pairs.append(item)
    return pairs


def _tokens(pieces: Sequence[tuple[str, float]]) -> tuple[int, int]:
    from pipeline.tokenizer import load_clip_tokenizer

    count = count_tokens(pieces, load_clip_tokenizer())
    return count.tokens, count.chunks


def _as_json(parsed: ParsedPrompt) -> dict[str, Any]:
    tokens, chunks = _tokens(parsed.attention)
    negative_tokens, negative_chunks = _tokens(parsed.negative_attention)
    return {
        "prompt": parsed.prompt,
        "negative": parsed.negative,
        "attention": [list(piece) for piece in parsed.attention],
        "negative_attention": [list(piece) for piece in parsed.negative_attention],
        "loras": [
            {"name": ref.name, "weight": ref.te_weight, "unet_weight": ref.unet_weight}
            for ref in parsed.loras
        ],
        "hypernets": [{"name": ref.name, "strength": ref.strength} for ref in parsed.hypernets],
        "embeddings": list(parsed.embeddings),
        "negative_embeddings": list(parsed.negative_embeddings),
        "networks": _networks(parsed),
        "flags": dict(parsed.flags),
        "tokens": tokens,
        "chunks": chunks,
        "negative_tokens": negative_tokens,
        "negative_chunks": negative_chunks,
        "warnings": list(parsed.warnings),
        "errors": list(parsed.errors),
    }


def _networks(parsed: ParsedPrompt) -> list[dict[str, Any]]:
    """Every extra network the prompt names, installed or not, then the embeddings it uses."""
    found = [_network(tag) for tag in parsed.networks]
    for where, names in (("prompt", parsed.embeddings), ("negative", parsed.negative_embeddings)):
        found += [
            {"kind": "embedding", "name": name, "in": where, "installed": True, "closest": []}
            for name in names
        ]
    return found


def _network(tag: NetworkTag) -> dict[str, Any]:
    weights = tag.weights or (None, None)
    shown = (
        {"strength": weights[0]}
        if tag.kind == "hypernet"
        else {"weight": weights[0], "unet_weight": weights[-1]}
    )
    return {
        "kind": tag.kind,
        "name": tag.name,
        "in": "prompt",
        "tag": tag.tag,
        **shown,
        "installed": tag.installed,
        "closest": list(tag.closest),
    }


def _as_table(parsed: ParsedPrompt) -> str:
    """The reading as aligned lines, for a person at a terminal."""
    lines = []
    for label, text, pieces in (
        ("prompt", parsed.prompt, parsed.attention),
        ("negative", parsed.negative, parsed.negative_attention),
    ):
        tokens, chunks = _tokens(pieces)
        lines.append(f"{label:<10} {json.dumps(text, ensure_ascii=False)}")
        lines.append(f"{'':<10} {tokens} tokens in {chunks} chunk{'s' * (chunks != 1)}")
        for piece_text, weight in pieces:
            if (piece_text, weight) == ("BREAK", BREAK_WEIGHT):
                lines.append(f"{'':<10} {'BREAK':>8}")
            elif piece_text:
                shown = json.dumps(piece_text, ensure_ascii=False)
                lines.append(f"{'':<10} {weight:>8.3f}  {shown}")
    for ref in parsed.loras:
        lines.append(f"{'lora':<10} {ref.name}  te {ref.te_weight:g}  unet {ref.unet_weight:g}")
    for hypernet in parsed.hypernets:
        lines.append(f"{'hypernet':<10} {hypernet.name}  strength {hypernet.strength:g}")
    for tag in parsed.networks:
        if not tag.installed:
            closest = f"; closest: {', '.join(tag.closest)}" if tag.closest else ""
            lines.append(f"{tag.kind:<10} {tag.name}  not installed{closest}")
    embeddings = [*parsed.embeddings, *(f"{n} (negative)" for n in parsed.negative_embeddings)]
    if embeddings:
        lines.append(f"{'embeddings':<10} {', '.join(embeddings)}")
    if parsed.flags:
        shown = "  ".join(f"{key}={value}" for key, value in parsed.flags.items())
        lines.append(f"{'flags':<10} {shown}")
    lines += [f"{'warning':<10} {warning}" for warning in parsed.warnings]
    lines += [f"{'error':<10} {error}" for error in parsed.errors]
    lines.append(f"{'result':<10} {'accepted' if parsed.ok else 'rejected'}")
    return "\n".join(lines)
