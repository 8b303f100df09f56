"""Prompt conditioning with A1111's semantics: weighted tokens, 75-token chunks, BREAK, clip skip.

The prompt is parsed into (text, weight) pieces, tokenized piece by piece and packed into chunks
of 75 tokens (BOS and EOS make 77). Each chunk is encoded alone, its token embeddings are scaled
by their weights and the chunk is rescaled so its mean stays as it was, and the chunks are
concatenated. For a plain prompt of up to 75 tokens this equals diffusers' own `encode_prompt`.

Textual-inversion embeddings are found as A1111 finds them, by the tokens of their name inside a
piece's tokens. Each of their vectors takes one token position (with the piece's weight), and the
text encoder's input embedding at that position is replaced by the vector while encoding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from pipeline.tokenizer import clean_text

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20
"""A1111's default word-wrap: when a chunk fills up, text after a comma this close to the end
moves to the next chunk, so a phrase is not cut in half."""

BREAK = ("BREAK", -1.0)
PLACEHOLDER_ID = 0
"""The token id sent at a vector's position, as in A1111; its embedding is replaced anyway."""

Vectors = Mapping[str, "torch.Tensor"]
"""Textual-inversion vectors, (count, width), by embedding name."""
NO_VECTORS: Vectors = MappingProxyType({})


@dataclass(frozen=True)
class VectorSlot:
    """A token position taken by vector `index` of the embedding `name`."""

    name: str
    index: int


@dataclass
class Chunk:
    """Up to 75 tokens with their attention weights (BOS/EOS are added when encoding).

    A token is a token id, or a `VectorSlot` where an embedding's vector goes.
    """

    tokens: list[int | VectorSlot] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def split_into_chunks(
    pieces: Sequence[tuple[str, float]],
    tokenizer: CLIPTokenizer,
    embeddings: Vectors = NO_VECTORS,
) -> tuple[list[Chunk], int]:
    """Pack weighted pieces into chunks as A1111 does; also return the prompt's token count.

    An embedding's vectors always share one chunk: if they do not fit in the current one, the
    chunk is closed early, as A1111 does.
    """
    texts = [clean_text(text) for text, _ in pieces]
    tokenized = tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)[
        "input_ids"
    ]
    names = _names_by_first_token(embeddings, tokenizer)
    comma = tokenizer.get_vocab().get(",</w>")
    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1
    token_count = 0

    def close_chunk() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk = Chunk()
        last_comma = -1

    for ids, (text, weight) in zip(tokenized, pieces, strict=True):
        if (text, weight) == BREAK:
            close_chunk()
            continue
        for unit in _with_vectors(ids, names, embeddings):
            if unit == (comma,):
                last_comma = len(chunk.tokens)
            elif (
                len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                cut = last_comma + 1
                moved = Chunk(chunk.tokens[cut:], chunk.weights[cut:])
                del chunk.tokens[cut:], chunk.weights[cut:]
                close_chunk()
                chunk = moved
            if len(chunk.tokens) + len(unit) > CHUNK_LENGTH:
                close_chunk()
            chunk.tokens += unit
            chunk.weights += [weight] * len(unit)
            token_count += len(unit)
    if chunk.tokens or not chunks:
        close_chunk()
    return chunks, token_count


_NameTokens = dict[int, list[tuple[tuple[int, ...], str]]]
"""Embedding names with their token ids, indexed by the first id."""


def _names_by_first_token(embeddings: Vectors, tokenizer: CLIPTokenizer) -> _NameTokens:
    """Index embedding names by their first token, longest names first, as A1111 matches them."""
    if not embeddings:
        return {}
    names = list(embeddings)
    ids = tokenizer(names, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
    found: _NameTokens = {}
    for name, name_ids in zip(names, ids, strict=True):
        if name_ids:
            found.setdefault(name_ids[0], []).append((tuple(name_ids), name))
    for candidates in found.values():
        candidates.sort(key=lambda candidate: -len(candidate[0]))
    return found


def _with_vectors(
    ids: Sequence[int], names: _NameTokens, embeddings: Vectors
) -> Iterator[tuple[int] | tuple[VectorSlot, ...]]:
    """A piece's tokens one by one, except that an embedding's name becomes all its slots."""
    position = 0
    while position < len(ids):
        for name_ids, name in names.get(ids[position], ()):
            if tuple(ids[position : position + len(name_ids)]) == name_ids:
                yield tuple(VectorSlot(name, index) for index in range(len(embeddings[name])))
                position += len(name_ids)
                break
        else:
            yield (ids[position],)
            position += 1


def encode_chunks(
    chunks: Sequence[Chunk],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clip_skip: int = 1,
    embeddings: Vectors = NO_VECTORS,
) -> torch.Tensor:
    """Encode one prompt's chunks into a (1, 77 * len(chunks), width) tensor of weighted embeddings.

    `embeddings` holds the vectors of the `VectorSlot`s that `split_into_chunks` placed.
    """
    return encode_together([chunks], [1], text_encoder, tokenizer, clip_skip, embeddings)[0]


def encode_together(
    prompts: Sequence[Sequence[Chunk]],
    counts: Sequence[int],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clip_skip: int = 1,
    embeddings: Vectors = NO_VECTORS,
) -> list[torch.Tensor]:
    """Encode prompts as A1111 encodes the texts of one edit schedule: as one batch.

    A1111 pads each prompt with empty chunks to the longest one, then encodes chunk position by
    position; the weighted chunks at a position are rescaled by one factor that keeps the mean
    of the whole batch. `counts` says how often each prompt appears in A1111's batch (a schedule
    can repeat a text), since each appearance counts in that mean. For one prompt this is the
    per-chunk rescaling of a plain prompt.
    """
    import torch

    length = max(len(chunks) for chunks in prompts)
    rows = [[*chunks, *[Chunk()] * (length - len(chunks))] for chunks in prompts]
    share = torch.tensor(counts, dtype=torch.float32, device=text_encoder.device)
    share = share / share.sum()
    encoded = []
    for position in range(length):
        hidden, multipliers = _encode_rows(
            [row[position] for row in rows], text_encoder, tokenizer, clip_skip, embeddings
        )
        scaled = hidden * multipliers
        new_mean = (scaled.float().mean(dim=(1, 2)) * share).sum()
        if new_mean != 0:  # every weight 0 leaves nothing to rescale
            old_mean = (hidden.float().mean(dim=(1, 2)) * share).sum()
            scaled = scaled * (old_mean / new_mean).to(hidden.dtype)
        encoded.append(scaled)
    return list(torch.cat(encoded, dim=1).split(1))


def _encode_rows(
    chunks: Sequence[Chunk],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clip_skip: int,
    embeddings: Vectors,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's output for one chunk per row, and the rows' weights, (rows, 77, 1)."""
    import torch

    device = text_encoder.device
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids, weights = [], []
    placed: list[tuple[int, int, torch.Tensor]] = []
    for row, chunk in enumerate(chunks):
        pad = CHUNK_LENGTH - len(chunk.tokens)
        tokens = []
        for column, token in enumerate(chunk.tokens, start=1):  # column 0 is BOS
            if isinstance(token, VectorSlot):
                placed.append((row, column, embeddings[token.name][token.index]))
                token = PLACEHOLDER_ID
            tokens.append(token)
        ids.append([bos, *tokens, *[eos] * pad, eos])
        weights.append([1.0, *chunk.weights, *[1.0] * pad, 1.0])
    input_ids = torch.tensor(ids, device=device)
    with _vectors_placed(text_encoder, placed):
        output = text_encoder(input_ids, output_hidden_states=clip_skip > 1)
    if clip_skip > 1:
        hidden = output.hidden_states[-clip_skip]
        # transformers 5 flattened CLIPTextModel; older versions nest it under `text_model`
        final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        hidden = final_norm(hidden)
    else:
        hidden = output.last_hidden_state
    multipliers = torch.tensor(weights, device=device, dtype=hidden.dtype).unsqueeze(-1)
    return hidden, multipliers


@contextmanager
def _vectors_placed(
    text_encoder: CLIPTextModel, placed: Sequence[tuple[int, int, torch.Tensor]]
) -> Iterator[None]:
    """Replace the token embeddings at (row, column) by the given vectors while in the body.

    A forward hook on the token embedding, removed on exit: CLIPTextModel's forward takes only
    token ids (no `inputs_embeds`), and a hook leaves the model's weights alone.
    """
    if not placed:
        yield
        return
    import torch

    device = text_encoder.device
    rows = torch.tensor([row for row, _, _ in placed], device=device)
    columns = torch.tensor([column for _, column, _ in placed], device=device)
    vectors = torch.stack([vector for _, _, vector in placed]).to(device)

    def place(_module: object, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[rows, columns] = vectors.to(output.dtype)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(place)
    try:
        yield
    finally:
        handle.remove()
