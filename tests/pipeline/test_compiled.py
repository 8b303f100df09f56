"""The compiled path on the tiny model (CPU, 64x64, 3 steps): its images are eager's within
float noise, and nothing a batch does afterwards (a LoRA patched in place, another model,
previews) makes dynamo compile again. One bucket is compiled for the whole module: inductor
on two CPU cores takes a minute or two a graph."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch._dynamo.config
from torch._dynamo.utils import counters

from pipeline.backend import ImageTask
from pipeline.compiled import (
    Bucket,
    CompiledDecoder,
    CompiledModels,
    resolve_mode,
    row_buckets,
)
from pipeline.engine import Engine, decode_latents
from pipeline.models import ModelManager, choose_placement, resolve_model
from pipeline.request import LoraRef
from pipeline.speed import tune_pipeline
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine
from tests.pipeline.test_speed import lora_files, psnr, tf32_restored, with_loras

__all__ = ["lora_files", "tf32_restored"]  # fixtures shared with test_speed

STYLE = (LoraRef("style", 2.0, 2.0),)


class _Counted:
    """The compiled UNet's graph, counting the calls that reach it."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.compiled(*args, **kwargs)


@pytest.fixture(scope="module")
def compiled(lora_files) -> Iterator[tuple[Engine, _Counted]]:
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    sources = {"tiny": resolve_model("tiny"), "other": resolve_model("tiny", "other")}
    models = ModelManager(sources, "tiny", choose_placement(device="cpu"), keep=2)
    engine = with_loras(Engine(models), lora_files)
    tune_pipeline(models.get("tiny").pipe)  # fused projections, as on a GPU
    engine.compiled = CompiledModels("auto", [(64, 64)], row_buckets(1))
    assert engine.warm_up_next()  # the one bucket: 2 rows (prompt and negative) of 8x8
    assert not engine.warm_up_next()
    unet = engine.compiled.unet(models.get("tiny").pipe)
    assert unet.warm == {Bucket(2, 8, 8)}
    counted = _Counted(unet._compiled)
    unet._compiled = counted
    yield engine, counted
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.fixture
def no_recompiles() -> Iterator[None]:
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_images_equal_eager_ones(compiled, no_recompiles) -> None:
    engine, counted = compiled
    before = counted.calls
    image = pixels(run(engine, SMALL)[0])
    assert counted.calls - before == SMALL.steps  # every step ran the compiled graph
    assert psnr(image, pixels(run(tiny_engine(), SMALL)[0])) > 40


def test_a_lora_switch_does_not_recompile_and_still_takes_effect(
    compiled, lora_files, no_recompiles
) -> None:
    engine, counted = compiled
    before = counted.calls
    styled = pixels(run(engine, SMALL, loras=STYLE)[0])
    assert counted.calls - before == SMALL.steps
    eager = with_loras(tiny_engine(), lora_files)
    assert psnr(styled, pixels(run(eager, SMALL, loras=STYLE)[0])) > 40
    assert np.abs(styled - pixels(run(engine, SMALL)[0])).mean() > 5


def test_another_model_and_previews_do_not_recompile(compiled, no_recompiles) -> None:
    engine, counted = compiled
    run(engine, SMALL, model="other")  # not warm: eager, and the tiny model's graph stays
    before = counted.calls
    previews: list[object] = []
    engine.run(
        [ImageTask("t", 0, SMALL)],
        lambda _step, _total, preview: previews.append(preview()),
        lambda: False,
    )
    assert counted.calls - before == SMALL.steps and len(previews) == SMALL.steps


def test_a_shape_without_a_warm_bucket_runs_eager(compiled) -> None:
    engine, counted = compiled
    before = counted.calls
    graphs = counters["stats"]["unique_graphs"]
    run(engine, SMALL, count=2)  # 4 rows: no bucket holds them
    assert counted.calls == before and counters["stats"]["unique_graphs"] == graphs


def test_buckets_cover_the_planners_batch_sizes() -> None:
    assert row_buckets(1) == (2,)
    assert row_buckets(8) == (2, 4, 8, 16)
    assert row_buckets(6) == (2, 4, 8, 16)
    assert (resolve_mode("auto", "cpu"), resolve_mode("auto", "cuda")) == ("off", "auto")
    assert resolve_mode("max", "cpu") == "max"


def test_the_compiled_decoder_decodes_as_eager_and_falls_back_for_other_shapes() -> None:
    vae = tiny_engine().models.get("tiny").pipe.vae
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        eager = decode_latents(vae, latents, 2)
    decoder = CompiledDecoder(vae, [(2, 8, 8)])
    assert vae.decoder.forward is decoder and decoder.cold == [(2, 8, 8)]
    decoder.warm_up((2, 8, 8))
    counted = _Counted(decoder._compiled)
    decoder._compiled = counted
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        compiled = decode_latents(vae, latents, 2)  # 2 through the graph, the third eager
    assert counters["stats"]["unique_graphs"] == graphs and decoder.cold == []
    assert counted.calls == 1
    for image, reference in zip(compiled, eager, strict=True):
        assert psnr(np.asarray(image), np.asarray(reference)) > 40
