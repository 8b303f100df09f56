"""Conditioning: equal to diffusers for plain prompts; chunks, BREAK, weights and padding."""

from __future__ import annotations

import pytest
import torch

from pipeline.conditioning import CHUNK_LENGTH, encode_chunks, split_into_chunks
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.prompt.attention import parse_prompt_attention


@pytest.fixture(scope="module")
def pipe():
    manager = ModelManager({"tiny": resolve_model("tiny")}, "tiny", choose_placement("cpu"))
    return manager.get("tiny").pipe


def encode(pipe, text: str, clip_skip: int = 1) -> torch.Tensor:
    chunks, _ = split_into_chunks(parse_prompt_attention(text), pipe.tokenizer)
    with torch.inference_mode():
        return encode_chunks(chunks, pipe.text_encoder, pipe.tokenizer, clip_skip)


def test_plain_prompt_equals_diffusers_encode_prompt(pipe) -> None:
    prompt, negative = "a photo of a fox, snow, 35mm", "blurry, lowres"
    with torch.inference_mode():
        theirs, their_negative = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    assert torch.allclose(encode(pipe, prompt), theirs, atol=1e-6)
    assert torch.allclose(encode(pipe, negative), their_negative, atol=1e-6)


def test_clip_skip_2_is_the_penultimate_layer_through_the_final_norm(pipe) -> None:
    ids = pipe.tokenizer("a fox", padding="max_length", max_length=77, return_tensors="pt")
    with torch.inference_mode():
        hidden = pipe.text_encoder(ids.input_ids, output_hidden_states=True).hidden_states[-2]
        expected = pipe.text_encoder.final_layer_norm(hidden)
    assert torch.allclose(encode(pipe, "a fox", clip_skip=2), expected, atol=1e-6)


def test_long_prompt_uses_every_token_in_chunks_of_75(pipe) -> None:
    words = " ".join(["fox"] * 199)
    chunks, count = split_into_chunks([(words + " cat", 1.0)], pipe.tokenizer)
    assert count == 200
    assert [len(chunk.tokens) for chunk in chunks] == [CHUNK_LENGTH, CHUNK_LENGTH, 50]
    assert sum(len(chunk.tokens) for chunk in chunks) == count
    first, changed = encode(pipe, words + " fox"), encode(pipe, words + " cat")
    assert first.shape == (1, 3 * 77, 32)
    assert not torch.equal(first[:, 154:], changed[:, 154:])


def test_break_starts_a_new_chunk(pipe) -> None:
    chunks, _ = split_into_chunks(parse_prompt_attention("a fox BREAK a cat"), pipe.tokenizer)
    assert [len(chunk.tokens) for chunk in chunks] == [2, 2]


def test_text_after_a_late_comma_moves_to_the_next_chunk(pipe) -> None:
    head = " ".join(["fox"] * 70)
    chunks, _ = split_into_chunks([(head + ", red panda in deep snow", 1.0)], pipe.tokenizer)
    assert chunks[0].tokens[-1] == pipe.tokenizer.get_vocab()[",</w>"]
    assert len(chunks[1].tokens) == 5


def test_weights_scale_tokens_but_keep_the_chunk_mean(pipe) -> None:
    plain, weighted = encode(pipe, "a fox in the snow"), encode(pipe, "a (fox:1.5) in the snow")
    assert not torch.allclose(plain, weighted)
    assert torch.allclose(plain.mean(), weighted.mean(), atol=1e-5)


@pytest.mark.parametrize(
    ("pasted", "plain"),
    [
        ("a fox，snow", "a fox,snow"),  # full-width comma, as Japanese and Chinese IMEs type it
        ("it’s a “red” fox", 'it\'s a "red" fox'),  # curly quotes from a word processor
        ("fish &amp; chips", "fish & chips"),  # an HTML entity copied from a web page
        ("a   fox\n\tin snow", "a fox in snow"),
    ],
)
def test_pasted_text_tokenizes_like_its_plain_form_as_in_a1111(pipe, pasted, plain) -> None:
    """CLIP's tokenizer (and A1111's) runs ftfy first; the expected tokens are the plain text's."""
    ours, _ = split_into_chunks([(pasted, 1.0)], pipe.tokenizer)
    reference, _ = split_into_chunks([(plain, 1.0)], pipe.tokenizer)
    assert ours[0].tokens == reference[0].tokens
