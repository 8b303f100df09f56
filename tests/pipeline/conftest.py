"""Fixtures of the A1111 parity tests, shared by their modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from diffusers import PNDMScheduler

from pipeline.engine import Engine
from pipeline.models import config_dir
from tests.pipeline.engine_helpers import tiny_engine


@pytest.fixture(scope="module")
def sd15_engine() -> Engine:
    """The tiny model on the scheduler config a checkpoint file gets (`leading` spacing),
    which differs from the tiny model's own in the ways that matter to A1111 parity."""
    engine = tiny_engine()
    pipe = engine.models.get("tiny").pipe
    pipe.scheduler = PNDMScheduler.from_pretrained(config_dir(), subfolder="scheduler")
    assert pipe.scheduler.config.timestep_spacing == "leading"
    return engine


@pytest.fixture
def decoded_latents(sd15_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Every latent the engine hands the VAE decoder, unscaled again."""
    vae = sd15_engine.models.get("tiny").pipe.vae
    seen: list[torch.Tensor] = []
    decode = vae.decode

    def recording(latents: torch.Tensor, *args: object, **kwargs: object) -> object:
        seen.append(latents * vae.config.scaling_factor)
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", recording)
    yield seen
