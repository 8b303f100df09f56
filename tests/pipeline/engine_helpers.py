"""Building the real engine on the tiny model for tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pipeline.backend import ImageResult, ImageTask
from pipeline.engine import Engine
from pipeline.models import ModelManager, choose_placement, resolve_model
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
