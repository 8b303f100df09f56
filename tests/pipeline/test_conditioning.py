"""Conditioning: equal to diffusers for plain prompts; chunks, BREAK, weights and padding."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from pipeline.conditioning import CHUNK_LENGTH, encode_chunks, encode_together, split_into_chunks
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


@pytest.fixture(scope="module")
def biased_pipe(pipe):
    """The tiny pipe with a text encoder whose output mean is far from 0.

    The tiny model's final layer norm has no bias, so its outputs average to float noise and
    the mean-restoring factor of weighted prompts is noise over noise; SD1.5's has one.
    """
    text_encoder = copy.deepcopy(pipe.text_encoder)
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    with torch.no_grad():
        final_norm.bias.copy_(torch.linspace(-0.5, 1.5, final_norm.bias.numel()))
    return SimpleNamespace(tokenizer=pipe.tokenizer, text_encoder=text_encoder)


def a1111_batch(pipe, rows: list[tuple[str, float]]) -> torch.Tensor:
    """A1111's encoding of a batch of one-chunk texts, each (text, weight of all its tokens).

    As sd_hijack_clip and sd_emphasis ("Original") do it: encode the batch, multiply by the
    weights, then rescale the whole batch so its mean is the mean before the weights.
    """
    ids, weights = [], []
    for text, weight in rows:
        tokens = pipe.tokenizer(text, add_special_tokens=False).input_ids
        pad = 75 - len(tokens)
        ids.append(
            [pipe.tokenizer.bos_token_id, *tokens, *[pipe.tokenizer.eos_token_id] * (pad + 1)]
        )
        weights.append([1.0, *[weight] * len(tokens), *[1.0] * (pad + 1)])
    with torch.inference_mode():
        z = pipe.text_encoder(torch.tensor(ids)).last_hidden_state
    original_mean = z.mean()
    z = z * torch.tensor(weights).unsqueeze(-1)
    return z * (original_mean / z.mean())


def test_a_schedules_texts_are_weighted_together_as_a1111_encodes_one_schedule(
    biased_pipe,
) -> None:
    pipe = biased_pipe
    # The schedule of [(cat:1.5)|dog|dog] over 6 steps: cat, dog, dog, cat, dog, dog.
    expected = a1111_batch(pipe, [("cat", 1.5), ("dog", 1.0), ("dog", 1.0)] * 2)
    chunks = [
        split_into_chunks(parse_prompt_attention(t), pipe.tokenizer)[0]
        for t in ("(cat:1.5)", "dog")
    ]
    with torch.inference_mode():
        cat, dog = encode_together(chunks, [2, 4], pipe.text_encoder, pipe.tokenizer)
    torch.testing.assert_close(cat[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dog[0], expected[1], rtol=1e-5, atol=1e-5)
    # Alone, each text keeps its own mean: a different encoding.
    assert (encode(pipe, "dog") - dog).abs().max() > 1e-3
    assert (encode(pipe, "(cat:1.5)") - cat).abs().max() > 1e-3


def test_texts_of_one_schedule_are_padded_with_empty_chunks(pipe) -> None:
    long = " ".join(["fox"] * 100)
    chunks = [
        split_into_chunks(parse_prompt_attention(t), pipe.tokenizer)[0] for t in ("cat", long)
    ]
    with torch.inference_mode():
        short, longer = encode_together(chunks, [1, 1], pipe.text_encoder, pipe.tokenizer)
    assert short.shape == longer.shape == (1, 2 * 77, 32)
    # A1111's empty chunk: BOS then EOS to the end, unweighted.
    torch.testing.assert_close(short[:, 77:], encode(pipe, ""), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(short[:, :77], encode(pipe, "cat"), rtol=1e-5, atol=1e-6)
