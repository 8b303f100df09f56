"""Textual-inversion embeddings: find the vectors in a `.safetensors` file, check, load, name them.

Two layouts exist in the wild: A1111 saves one tensor `emb_params` (the name is the file's), and
diffusers saves `{token: tensor}` with the token as the only key. Both hold 1..75 vectors of the
text encoder's width. Turning a name in a prompt into these vectors is the conditioning's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.lora.header import Header, TensorEntry, read_header
from pipeline.lora.keys import parse_key

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer

A1111_KEY = "emb_params"
SDXL_KEYS = frozenset({"clip_l", "clip_g"})
_MODULE_ENDINGS = (".weight", ".bias")
MAX_VECTORS = 75
"""A prompt chunk holds 75 tokens; an embedding longer than that could never be used."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Names live inside prompts, so no spaces and none of the prompt syntax ( ) [ ] < > : , |."""


@dataclass(frozen=True)
class Embedding:
    """Loaded vectors, float32 (count, width), and the token the file names, if it names one."""

    vectors: torch.Tensor
    token: str | None


def find_vectors(header: Header) -> tuple[str, TensorEntry] | None:
    """The key and entry of an embedding's vectors, or None when the file is not an embedding."""
    if len(header.tensors) != 1:
        return None
    ((key, entry),) = header.tensors.items()
    if key != A1111_KEY and (parse_key(key) is not None or key.endswith(_MODULE_ENDINGS)):
        return None  # a lone adapter half or a model layer, not a diffusers token
    return (key, entry) if len(entry.shape) in (1, 2) else None


def vector_count(entry: TensorEntry) -> int:
    return entry.shape[0] if len(entry.shape) == 2 else 1


def embedding_problem(entry: TensorEntry, model_width: int) -> str | None:
    """Why these vectors cannot serve a model of `model_width`, or None when they can."""
    width, count = entry.shape[-1], vector_count(entry)
    if width != model_width:
        return f"its vectors have width {width}, the loaded model needs {model_width}"
    if not 1 <= count <= MAX_VECTORS:
        return f"it has {count} vectors; an embedding needs 1 to {MAX_VECTORS}"
    return None


def load_embedding(path: Path, model_width: int) -> Embedding:
    """Check and load an embedding's vectors; UserError says why a file is refused."""
    import torch
    from safetensors import safe_open

    header = read_header(path)
    found = find_vectors(header)
    if found is None:
        raise UserError(f"{path.name} is not a textual-inversion embedding")
    key, entry = found
    problem = embedding_problem(entry, model_width)
    if problem:
        raise UserError(f"{path.name} cannot be used: {problem}")
    with safe_open(str(path), framework="pt") as file:
        vectors = file.get_tensor(key).to(torch.float32).reshape(-1, model_width)
    if not torch.isfinite(vectors).all():
        raise UserError(f"{path.name} holds NaN or infinite values: it is broken, refused")
    return Embedding(vectors=vectors, token=None if key == A1111_KEY else key)


def check_embedding_name(name: str, tokenizer: CLIPTokenizer) -> None:
    """Refuse a name a prompt could not use or that would hide a word the model already knows."""
    if not _NAME.fullmatch(name):
        raise UserError(
            f"{name!r} cannot name an embedding: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if len(tokenizer.tokenize(name)) == 1:
        raise UserError(
            f"{name!r} is a single word of the model's vocabulary, so the embedding would hide it: "
            f"pick a more distinctive name such as '{name}-emb'"
        )
