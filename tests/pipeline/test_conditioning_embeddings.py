"""Textual-inversion embeddings in the conditioning: vectors take token positions, weights apply.

The sharpest check: an embedding whose vectors are the model's own token embeddings of some words
must encode exactly like those words.
"""

from __future__ import annotations

import pytest
import torch

from pipeline.conditioning import (
    CHUNK_LENGTH,
    Vectors,
    VectorSlot,
    encode_chunks,
    split_into_chunks,
)
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.prompt.attention import parse_prompt_attention


@pytest.fixture(scope="module")
def pipe():
    manager = ModelManager({"tiny": resolve_model("tiny")}, "tiny", choose_placement("cpu"))
    return manager.get("tiny").pipe


def encode(pipe, text: str, embeddings: Vectors) -> torch.Tensor:
    pieces = parse_prompt_attention(text)
    chunks, _ = split_into_chunks(pieces, pipe.tokenizer, embeddings)
    with torch.inference_mode():
        return encode_chunks(chunks, pipe.text_encoder, pipe.tokenizer, 1, embeddings)


def vectors_of(pipe, words: str) -> torch.Tensor:
    """The model's own input embeddings of `words`: an embedding that means exactly them."""
    ids = pipe.tokenizer(words, add_special_tokens=False)["input_ids"]
    return pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone()


def test_an_embedding_made_of_word_vectors_encodes_like_the_words(pipe) -> None:
    embeddings = {"fox-emb": vectors_of(pipe, "red fox")}
    assert torch.allclose(
        encode(pipe, "a photo of fox-emb in snow", embeddings),
        encode(pipe, "a photo of red fox in snow", {}),
        atol=1e-6,
    )


def test_an_embedding_changes_the_conditioning_against_the_plain_words(pipe) -> None:
    embeddings = {"fox-emb": torch.randn(2, 32, generator=torch.Generator().manual_seed(3))}
    assert not torch.allclose(
        encode(pipe, "a photo of fox-emb", embeddings), encode(pipe, "a photo of fox-emb", {})
    )


def test_unused_embeddings_leave_the_encoding_and_the_model_as_they_were(pipe) -> None:
    plain = encode(pipe, "a photo of a fox", {})
    assert torch.equal(encode(pipe, "a photo of a fox", {"fox-emb": torch.ones(1, 32)}), plain)
    encode(pipe, "fox-emb", {"fox-emb": torch.ones(1, 32)})
    assert torch.equal(encode(pipe, "a photo of a fox", {}), plain)  # the hook is gone


def test_names_match_whole_words_in_any_case(pipe) -> None:
    embeddings = {"FoxEmb": torch.ones(3, 32)}
    slots = [VectorSlot("FoxEmb", index) for index in range(3)]
    chunks, count = split_into_chunks([("a foxemb, b", 1.0)], pipe.tokenizer, embeddings)
    assert chunks[0].tokens[1:4] == slots
    assert count == 6  # a, three vectors, the comma, b
    chunks, _ = split_into_chunks([("a foxembs", 1.0)], pipe.tokenizer, embeddings)
    assert not any(isinstance(token, VectorSlot) for token in chunks[0].tokens)


def test_the_weight_of_the_surrounding_piece_applies_to_the_vectors(pipe) -> None:
    embeddings = {"fox-emb": vectors_of(pipe, "fox")}
    weighted = encode(pipe, "a (fox-emb:1.5) in snow", embeddings)
    assert torch.allclose(weighted, encode(pipe, "a (fox:1.5) in snow", {}), atol=1e-6)
    assert not torch.allclose(weighted, encode(pipe, "a fox-emb in snow", embeddings))


def test_an_embedding_that_does_not_fit_moves_whole_to_the_next_chunk(pipe) -> None:
    head = " ".join(["fox"] * 70)
    embeddings = {"big-emb": torch.ones(10, 32)}
    chunks, _ = split_into_chunks([(head + " big-emb", 1.0)], pipe.tokenizer, embeddings)
    assert [len(chunk.tokens) for chunk in chunks] == [70, 10]
    assert chunks[1].tokens == [VectorSlot("big-emb", index) for index in range(10)]
    encoded = encode(pipe, head + " big-emb", embeddings)
    assert encoded.shape == (1, 2 * (CHUNK_LENGTH + 2), 32)
