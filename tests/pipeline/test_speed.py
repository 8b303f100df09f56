"""The throughput habits (pipeline/speed.py, the encoding cache, the batched decode) change
nothing but speed: the tiny model's images stay what they were, LoRAs still take effect with
fused projections, and the step loop reads nothing back from the device."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.backend import ImageTask
from pipeline.engine import Engine, decode_latent, decode_latents
from pipeline.lora.cache import AdapterCache
from pipeline.lora.source import AdapterSource
from pipeline.memory import MemoryModel
from pipeline.request import HypernetRef, LoraRef
from pipeline.speed import tune_pipeline
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine
from tests.pipeline.lora import hypernet_files as hf
from tests.pipeline.lora import make_files as mf
from tests.pipeline.test_engine_loras import Files


def psnr(image: np.ndarray, other: np.ndarray) -> float:
    mse = float(np.mean((image.astype(np.float64) - other) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture
def tf32_restored() -> Iterator[None]:
    """tune_pipeline sets process-wide TF32 flags; put them back for the other tests."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("speed-loras")
    pipe = tiny_engine().models.get("tiny").pipe
    texts = mf.text_targets(pipe.text_encoder)
    tensors = mf.kohya_tensors(mf.unet_targets(pipe.unet), texts, mf.lora_parts, 4, 4.0)
    return Files({"style": mf.write(folder / "style.safetensors", tensors)})


def with_loras(engine: Engine, files: Files) -> Engine:
    engine.adapters = AdapterSource(files, Files({}), AdapterCache(64 * 1024**2))
    return engine


def tuned(engine: Engine) -> Engine:
    tune_pipeline(engine.models.get("tiny").pipe)
    return engine


def test_tuning_lays_out_channels_last_fuses_projections_and_allows_tf32(tf32_restored) -> None:
    plain, fast = tiny_engine(), tuned(tiny_engine())
    unet = fast.models.get("tiny").pipe.unet
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not unet.conv_in.weight.is_contiguous()
    assert {type(p) for p in unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert psnr(pixels(run(plain, SMALL)[0]), pixels(run(fast, SMALL)[0])) > 40


def test_a_lora_has_the_same_effect_on_fused_projections(lora_files, tf32_restored) -> None:
    style = (LoraRef("style", 2.0, 2.0),)
    plain = with_loras(tiny_engine(), lora_files)
    fast = with_loras(tuned(tiny_engine()), lora_files)
    base = pixels(run(fast, SMALL)[0])
    styled = pixels(run(fast, SMALL, loras=style)[0])
    assert np.abs(styled - base).mean() > 5  # the LoRA took effect through the fused weights
    assert psnr(styled, pixels(run(plain, SMALL, loras=style)[0])) > 40
    assert np.array_equal(pixels(run(fast, SMALL)[0]), base)  # and was taken out of them


def test_a_hypernetwork_still_hooks_a_fused_unet(tmp_path, tf32_restored) -> None:
    path = hf.write_hypernetwork(tmp_path / "mood.safetensors", seed=3)
    plain, fast = tiny_engine(), tuned(tiny_engine())
    for engine in (plain, fast):
        engine.adapters = AdapterSource(
            Files({}), Files({}), AdapterCache(2**24), hypernetworks=Files({"mood": path})
        )
    mood = (HypernetRef("mood", 1.0),)
    hooked = pixels(run(fast, SMALL, hypernets=mood)[0])
    assert np.abs(hooked - pixels(run(fast, SMALL)[0])).mean() > 1
    assert psnr(hooked, pixels(run(plain, SMALL, hypernets=mood)[0])) > 40
    unet = fast.models.get("tiny").pipe.unet
    assert {type(p) for p in unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    assert AttnProcessor2_0 in {type(p) for p in unet.original_attn_processors.values()}


class _TextEncoderCalls:
    def __init__(self, engine: Engine) -> None:
        self.count = 0
        encoder = engine.models.get("tiny").pipe.text_encoder
        encoder.register_forward_pre_hook(lambda *_: setattr(self, "count", self.count + 1))


def test_encodings_are_kept_across_batches_until_the_loras_change(lora_files) -> None:
    engine = with_loras(tiny_engine(), lora_files)
    calls = _TextEncoderCalls(engine)
    base = pixels(run(engine, SMALL)[0])
    first = calls.count
    assert first > 0
    rerolled = run(engine, replace(SMALL, seed=7))
    assert calls.count == first  # the same prompt, another seed: nothing encoded again
    styled = pixels(run(engine, SMALL, loras=(LoraRef("style", 1.0, 0.0),))[0])
    assert calls.count > first  # the LoRA patches the text encoder: encoded again
    fresh = with_loras(tiny_engine(), lora_files)
    assert np.array_equal(styled, pixels(run(fresh, SMALL, loras=(LoraRef("style", 1.0, 0.0),))[0]))
    before = calls.count
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)
    assert calls.count == before and rerolled
    run(engine, SMALL, clip_skip=2)
    assert calls.count > before


def test_the_decode_batch_follows_the_published_figures() -> None:
    # 0.43 GB per image of UNet activations, about 1 GiB a 512x512 decode (shared/sd15.md):
    # after sampling, a batch of n has room for 1 + floor(0.433 n / 1.074) decodes.
    model = MemoryModel()
    assert [model.decode_batch(n) for n in (1, 2, 3, 4, 5, 8, 16)] == [1, 1, 2, 2, 3, 4, 7]


def test_a_batched_decode_gives_the_images_of_one_by_one() -> None:
    vae = tiny_engine().models.get("tiny").pipe.vae
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        batched = decode_latents(vae, latents, 3)
        single = [decode_latent(vae, latent) for latent in latents]
    for image, alone in zip(batched, single, strict=True):
        assert psnr(np.asarray(image), np.asarray(alone)) > 40


SYNCS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal"}
"""The aten ops that read a tensor's value back to the host (`.item()`, `bool()`, `if x:`)."""


class _Reads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.in_loop = False
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name.split("::")[-1]
        if self.in_loop and name in SYNCS:
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampler", ["DPM++ 2M", "Euler a"])
def test_the_step_loop_reads_nothing_back_from_the_device(sampler: str) -> None:
    """Between the first and the last step (previews off), nothing waits for the device."""
    engine = tiny_engine()
    request = replace(SMALL, steps=5, sampler=sampler, count=2)
    reads = _Reads()

    def on_step(step: int, total: int, _preview: object) -> None:
        reads.in_loop = 1 <= step < total

    with reads:
        engine.run([ImageTask("t", i, request) for i in range(2)], on_step, lambda: False)
    assert reads.seen == Counter()


def test_fast_mode_merges_tokens_for_its_batch_only_and_says_so() -> None:
    import tomesd  # the method: its patch, applied as A1111 applies it, is the reference

    engine = tiny_engine()
    base = run(engine, SMALL)[0]
    fast = run(engine, SMALL, token_merging=0.5)[0]
    assert np.abs(pixels(fast) - pixels(base)).mean() > 0.5
    assert "Token merging ratio: 0.5" in fast.parameters
    assert "Token merging" not in base.parameters
    assert np.array_equal(pixels(run(engine, SMALL)[0]), pixels(base))  # the patch is gone
    reference = tiny_engine()
    tomesd.apply_patch(reference.models.get("tiny").pipe.unet, ratio=0.5, use_rand=False)
    assert np.array_equal(pixels(run(reference, SMALL)[0]), pixels(fast))


def test_a_copy_for_training_runs_the_separate_projections_again(tf32_restored) -> None:
    import copy

    from pipeline.speed import unfuse

    fast = tuned(tiny_engine())
    pipe = fast.models.get("tiny").pipe
    twin = copy.deepcopy(pipe.unet)
    unfuse(twin)
    assert {type(p) for p in twin.attn_processors.values()} == {AttnProcessor2_0}
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {FusedAttnProcessor2_0}
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    context = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        unet = pipe.unet(sample, 500, encoder_hidden_states=context).sample
        # A LoRA-like change of to_q alone must now reach the output.
        block = twin.down_blocks[0].attentions[0].transformer_blocks[0].attn1
        block.to_q.weight.mul_(2.0)
        changed = twin(sample, 500, encoder_hidden_states=context).sample
    assert not torch.allclose(unet, changed, atol=1e-4)
