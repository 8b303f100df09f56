"""Building the real engine on the tiny model for tests, and watching what it hands its models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pipeline.backend import ImageResult, ImageTask
from pipeline.conditioning import encode_chunks, split_into_chunks
from pipeline.engine import Engine
from pipeline.models import ModelManager, choose_placement, config_dir, resolve_model
from pipeline.prompt.attention import parse_prompt_attention
from pipeline.request import GenerationRequest

SMALL = GenerationRequest("a red fox in the snow", width=64, height=64, steps=3, seed=42)


def tiny_engine() -> Engine:
    placement = choose_placement(device="cpu")
    return Engine(ModelManager({"tiny": resolve_model("tiny")}, "tiny", placement))


def checkpoint_engine() -> Engine:
    """The tiny engine on the scheduler config a checkpoint file gets (`leading` spacing).

    The tiny model's own config has no spacing, which hides differences real models show.
    """
    from diffusers import PNDMScheduler

    engine = tiny_engine()
    pipe = engine.models.get("tiny").pipe
    pipe.scheduler = PNDMScheduler.from_pretrained(config_dir(), subfolder="scheduler")
    assert pipe.scheduler.config.timestep_spacing == "leading"
    return engine


def record_decodes(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A list that collects every latent the engine hands the VAE decoder, unscaled again."""
    vae = engine.models.get("tiny").pipe.vae
    seen: list[Any] = []
    decode = vae.decode

    def recording(latents: Any, *args: object, **kwargs: object) -> object:
        seen.append(latents * vae.config.scaling_factor)
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", recording)
    return seen


@contextmanager
def unet_contexts(engine: Engine) -> Iterator[list[Any]]:
    """The text encodings (batch, tokens, width) each UNet call reads, in call order."""
    unet = engine.models.get("tiny").pipe.unet
    seen: list[Any] = []

    def record(_module: object, _args: object, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["encoder_hidden_states"].clone())

    handle = unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


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
