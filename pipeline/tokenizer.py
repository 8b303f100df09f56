"""The CLIP ViT-L/14 tokenizer, rebuilt offline from the BPE vocabulary shipped in `pipeline/vocab`.

Single-file checkpoints and the tiny model carry no tokenizer, and the network may be closed, so
the vocabulary (OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz`, MIT licensed, its licence beside
it) is package data: a plain `pip install` has everything the tokenizer needs.
"""

from __future__ import annotations

import functools
import gzip
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_WHITESPACE = re.compile(r"\s+")
MERGE_COUNT = 49152 - 256 - 2
"""CLIP keeps the first 48,894 merges of the file; with 512 byte tokens and 2 specials: 49,408."""


def clean_text(text: str) -> str:
    """The text as CLIP's own tokenizer sees it: ftfy-fixed, whitespace collapsed.

    OpenAI's tokenizer, and the transformers 4 tokenizer A1111 runs, pass every text through
    `ftfy.fix_text` first, so a full-width comma, a curly quote or `&amp;` tokenizes like its plain
    form; transformers 5's tokenizer skips that step.
    """
    import ftfy

    return _WHITESPACE.sub(" ", ftfy.fix_text(text)).strip()


def vocabulary_path() -> Path:
    """Where the installed copy of the BPE vocabulary lies (inside the `pipeline` package)."""
    path = Path(str(resources.files("pipeline") / "vocab" / VOCAB_FILE))
    if not path.is_file():
        raise UserError(
            f"the CLIP vocabulary {path} is missing from this installation: reinstall Dreamcord "
            "(`pip install .` from the source folder)"
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
    # transformers annotates merges as strings; its tokenizer takes (left, right) pairs too.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]
