"""Fixtures of the A1111 parity tests, shared by their modules."""

from __future__ import annotations

import pytest

from pipeline.engine import Engine
from tests.pipeline.engine_helpers import checkpoint_engine, record_decodes


@pytest.fixture(scope="module")
def sd15_engine() -> Engine:
    """The tiny model on the scheduler config a checkpoint file gets (`leading` spacing),
    which differs from the tiny model's own in the ways that matter to A1111 parity."""
    return checkpoint_engine()


@pytest.fixture
def decoded_latents(sd15_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list:
    """Every latent the engine hands the VAE decoder, unscaled again."""
    return record_decodes(sd15_engine, monkeypatch)
