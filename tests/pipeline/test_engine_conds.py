"""A prompt and its negative go to the UNet at their own lengths, A1111's default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from pipeline.backend import ImageTask
from pipeline.infotext import parse_parameters
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine

LONG_PROMPT = ", ".join(f"detail {word}" for word in range(60))
"""Several 77-token chunks, where an empty negative has one."""


@contextmanager
def context_lengths(engine) -> Iterator[list[tuple[int, int]]]:
    """(batch, tokens) of the text each UNet call of the tiny model reads."""
    unet = engine.models.get("tiny").pipe.unet
    seen: list[tuple[int, int]] = []

    def record(_module, _args, kwargs) -> None:
        context = kwargs["encoder_hidden_states"]
        seen.append((context.shape[0], context.shape[1]))

    handle = unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_a_long_prompt_and_a_short_negative_are_not_padded_to_one_length() -> None:
    engine = tiny_engine()
    with context_lengths(engine) as seen:
        result = run(engine, SMALL, prompt=LONG_PROMPT, negative="", steps=2)[0]
    (uncond, cond) = sorted(set(seen))
    assert uncond == (1, 77) and cond[0] == 1 and cond[1] > 77 and cond[1] % 77 == 0, seen
    assert len(seen) == 2 * 2  # two calls a step
    assert "Pad conds" not in parse_parameters(result.parameters)[2]


def test_prompt_and_negative_of_one_length_share_one_unet_call() -> None:
    engine = tiny_engine()
    with context_lengths(engine) as seen:
        run(engine, SMALL, negative="blurry", steps=2)
    assert seen == [(2, 77), (2, 77)]


def test_two_images_with_different_negative_lengths_each_keep_their_own_image() -> None:
    """Batching never changes an image: each is what it is when it runs alone."""
    engine = tiny_engine()
    long_negative = ", ".join(f"bad {word}" for word in range(60))
    alone = [
        pixels(run(engine, SMALL, negative=negative, steps=2)[0])
        for negative in ("blurry", long_negative)
    ]
    tasks = [
        ImageTask(job, 0, replace(SMALL, negative=negative, steps=2))
        for job, negative in (("a", "blurry"), ("b", long_negative))
    ]
    batched = engine.run(tasks, lambda *_: None, lambda: False)
    for result, expected in zip(batched, alone, strict=True):
        assert np.abs(pixels(result).astype(int) - expected.astype(int)).max() <= 1
