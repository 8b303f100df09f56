"""Building the real engine on the tiny model for tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pipeline.backend import ImageResult, ImageTask
from pipeline.conditioning import encode_chunks, split_into_chunks
from pipeline.engine import Engine
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.prompt.attention import parse_prompt_attention
from pipeline.request import GenerationRequest

SMALL = GenerationRequest("a red fox in the snow", width=64, height=64, steps=3, seed=42)


def tiny_engine() -> Engine:
    placement = choose_placement(device="cpu")
    return Engine(ModelManager({"tiny": resolve_model("tiny")}, "tiny", placement))


def run(engine: Engine, request: GenerationRequest, **changes: object) -> list[ImageResult]:
    """Run every image of one request as one batch."""
    request = replace(request, **changes)
    tasks = [ImageTask("test", index, request) for index in range(request.count)]
    return engine.run(tasks, lambda *_: None, lambda: False)


def pixels(result: ImageResult) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


def encode_text(engine: Engine, text: str, clip_skip: int = 1) -> Any:
    """One plain text encoded alone by the text conditioning (A1111's, checked elsewhere)."""
    pipe = engine.models.get("tiny").pipe
    chunks, _ = split_into_chunks(parse_prompt_attention(text), pipe.tokenizer)
    return encode_chunks(chunks, pipe.text_encoder, pipe.tokenizer, clip_skip)
