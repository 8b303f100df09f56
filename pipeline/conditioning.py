"""Prompt conditioning with A1111's semantics: weighted tokens, 75-token chunks, BREAK, clip skip.

The prompt is parsed into (text, weight) pieces, tokenized piece by piece and packed into chunks
of 75 tokens (BOS and EOS make 77). Each chunk is encoded alone, its token embeddings are scaled
by their weights and the chunk is rescaled so its mean stays as it was, and the chunks are
concatenated. For a plain prompt of up to 75 tokens this equals diffusers' own `encode_prompt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20
"""A1111's default word-wrap: when a chunk fills up, text after a comma this close to the end
moves to the next chunk, so a phrase is not cut in half."""

BREAK = ("BREAK", -1.0)


@dataclass
class Chunk:
    """Up to 75 token ids with their attention weights (BOS/EOS are added when encoding)."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def split_into_chunks(
    pieces: Sequence[tuple[str, float]], tokenizer: CLIPTokenizer
) -> tuple[list[Chunk], int]:
    """Pack weighted pieces into chunks as A1111 does; also return the prompt's token count."""
    texts = [text for text, _ in pieces]
    tokenized = tokenizer(texts, truncation=False, add_special_tokens=False, verbose=False)[
        "input_ids"
    ]
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
        for token in ids:
            token_count += 1
            if token == comma:
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
            if len(chunk.tokens) == CHUNK_LENGTH:
                close_chunk()
            chunk.tokens.append(token)
            chunk.weights.append(weight)
    if chunk.tokens or not chunks:
        close_chunk()
    return chunks, token_count


def encode_chunks(
    chunks: Sequence[Chunk],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    clip_skip: int = 1,
) -> torch.Tensor:
    """Encode chunks into one (1, 77 * len(chunks), width) tensor of weighted embeddings."""
    import torch

    device = text_encoder.device
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids, weights = [], []
    for chunk in chunks:
        pad = CHUNK_LENGTH - len(chunk.tokens)
        ids.append([bos, *chunk.tokens, *[eos] * pad, eos])
        weights.append([1.0, *chunk.weights, *[1.0] * pad, 1.0])
    input_ids = torch.tensor(ids, device=device)
    output = text_encoder(input_ids, output_hidden_states=clip_skip > 1)
    if clip_skip > 1:
        hidden = output.hidden_states[-clip_skip]
        # transformers 5 flattened CLIPTextModel; older versions nest it under `text_model`
        final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
        hidden = final_norm(hidden)
    else:
        hidden = output.last_hidden_state
    multipliers = torch.tensor(weights, device=device, dtype=hidden.dtype).unsqueeze(-1)
    weighted = []
    for z, scale in zip(hidden, multipliers, strict=True):
        scaled = z * scale
        new_mean = scaled.float().mean()
        if new_mean != 0:  # every weight 0 leaves nothing to rescale
            scaled = scaled * (z.float().mean() / new_mean).to(z.dtype)
        weighted.append(scaled)
    return torch.cat(weighted).unsqueeze(0)


def pad_chunks(embedding: torch.Tensor, chunks: int, empty: torch.Tensor) -> torch.Tensor:
    """Extend an encoding to `chunks` chunks with the empty prompt's encoding, as A1111 does."""
    import torch

    missing = chunks - embedding.shape[1] // (CHUNK_LENGTH + 2)
    if missing <= 0:
        return embedding
    return torch.cat([embedding, empty.repeat(1, missing, 1)], dim=1)
