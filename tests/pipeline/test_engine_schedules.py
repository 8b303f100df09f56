"""Each denoiser call is conditioned as A1111 1.10 conditions it: editing, alternation and AND.

The references are k-diffusion runs through A1111's CFG denoiser
(tests/pipeline/k_diffusion_reference.py) from A1111's CPU noise, and the text encodings the UNet
is handed, compared with the plain text conditioning of each text. What each call should get
follows A1111's rules, written out in each test: a schedule lists (last step, text), and call n
(counted from 0 in each pass, Heun's second calls too) takes the first entry with n <= last step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.backend import ImageTask
from pipeline.engine import Engine
from pipeline.request import GenerationRequest, HiresSpec, Mode
from tests.pipeline.engine_helpers import (
    SMALL,
    checkpoint_engine,
    encode_text,
    pixels,
    record_decodes,
    run,
    unet_contexts,
)
from tests.pipeline.k_diffusion_reference import (
    Parts,
    load_k_diffusion,
    scheduled_cfg_denoiser,
    sd15_denoiser,
)

sampling, _ = load_k_diffusion()
EULER = replace(SMALL, negative="", sampler="Euler", steps=8, cfg=7.0)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return checkpoint_engine()


@pytest.fixture(scope="module")
def text(engine: Engine) -> Callable[[str], torch.Tensor]:
    cache: dict[str, torch.Tensor] = {}

    def encoded(value: str) -> torch.Tensor:
        if value not in cache:
            with torch.inference_mode():
                cache[value] = encode_text(engine, value)
        return cache[value]

    return encoded


def reference_euler(
    engine: Engine,
    request: GenerationRequest,
    conds_at: Callable[[int], tuple[Parts, torch.Tensor]],
) -> torch.Tensor:
    """k-diffusion's sample_euler as A1111 runs Euler, the CFG denoiser taking `conds_at`."""
    unet = engine.models.get("tiny").pipe.unet
    with torch.inference_mode():
        denoiser = sd15_denoiser(unet)
        sigmas = denoiser.get_sigmas(request.steps)  # Euler's Automatic: the uniform schedule
        shape = (1, 4, request.height // 8, request.width // 8)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(request.seed))
        model = scheduled_cfg_denoiser(denoiser, conds_at, request.cfg)
        return sampling.sample_euler(model, noise * sigmas[0], sigmas, disable=True)


def final_latents(engine: Engine, monkeypatch: pytest.MonkeyPatch, request) -> torch.Tensor:
    decoded = record_decodes(engine, monkeypatch)
    run(engine, request)
    return decoded[-1]


def test_prompt_editing_switches_after_the_call_a1111_switches_at(engine, monkeypatch, text):
    request = replace(EULER, prompt="[cat:dog:0.5]")
    latents = final_latents(engine, monkeypatch, request)
    # when = int(0.5 * 8) = 4, so the schedule is [(4, "cat"), (8, "dog")]: calls 0 to 4 cat.
    expected = reference_euler(
        engine, request, lambda n: ([(1.0, text("cat") if n <= 4 else text("dog"))], text(""))
    )
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-3)
    one_call_early = reference_euler(
        engine, request, lambda n: ([(1.0, text("cat") if n <= 3 else text("dog"))], text(""))
    )
    assert (latents - one_call_early).abs().max() > 0.01


def test_and_parts_are_combined_with_their_weights(engine, monkeypatch, text):
    request = replace(EULER, prompt="a cat AND a dog:0.5", negative="blurry")
    latents = final_latents(engine, monkeypatch, request)
    # A1111's parts: "a cat" at 1 and " a dog" at 0.5 (the spaces before a weight go).
    parts = [(1.0, text("a cat")), (0.5, text(" a dog"))]
    expected = reference_euler(engine, request, lambda n: (parts, text("blurry")))
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-3)
    first_part_only = reference_euler(engine, request, lambda n: (parts[:1], text("blurry")))
    assert (latents - first_part_only).abs().max() > 0.01


def test_alternation_changes_the_prompt_every_call(engine, monkeypatch, text):
    request = replace(EULER, prompt="[cat|dog]", steps=6)
    latents = final_latents(engine, monkeypatch, request)
    # Schedule [(1, cat), (2, dog), (3, cat), ...]: call 0 and 1 take step 1's entry.
    order = ["cat", "cat", "dog", "cat", "dog", "cat"]
    expected = reference_euler(engine, request, lambda n: ([(1.0, text(order[n]))], text("")))
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-3)
    cat_only = reference_euler(engine, request, lambda n: ([(1.0, text("cat"))], text("")))
    assert (latents - cat_only).abs().max() > 0.01


def names(contexts: list[torch.Tensor], row: int, texts: dict[str, torch.Tensor]) -> list[str]:
    """Which of `texts` each recorded UNet call got in batch row `row`."""
    found = []
    for context in contexts:
        matches = [
            name
            for name, value in texts.items()
            if torch.allclose(context[row], value[0], rtol=1e-5, atol=1e-5)
        ]
        found.append(matches[0] if len(matches) == 1 else "?")
    return found


@pytest.mark.parametrize("when", ["1.5", "6"])
def test_the_hires_pass_runs_its_own_schedule(engine, text, when):
    hires = HiresSpec(scale=1.5, steps=4, denoise=0.5, upscaler="Latent")
    request = replace(EULER, prompt=f"[cat:dog:{when}]", steps=4, hires=hires)
    with unet_contexts(engine) as contexts:
        run(engine, request)
    # First pass: 1.5 of 4 steps is 6, past the end, and 6 is too: cat throughout. Hires pass:
    # (1.5 - 1) x 4 = 2, and 6 - 4 first-pass steps = 2: [(2, cat), (4, dog)].
    got = names(contexts, 1, {"cat": text("cat"), "dog": text("dog")})
    assert got == ["cat"] * 4 + ["cat", "cat", "cat", "dog"]


def test_heun_counts_both_calls_of_a_step(engine, text):
    request = replace(EULER, prompt="[cat:dog:0.5]", sampler="Heun", steps=4)
    with unet_contexts(engine) as contexts:
        run(engine, request)
    # A1111 plans second-order samplers over 2 x 4 = 8 calls: when 4; Heun makes 7 calls.
    assert names(contexts, 1, {"cat": text("cat"), "dog": text("dog")}) == ["cat"] * 5 + ["dog"] * 2


def test_the_negative_has_its_own_schedule(engine, text):
    request = replace(EULER, prompt="a cat", negative="[blurry:sharp:0.5]", steps=4)
    with unet_contexts(engine) as contexts:
        run(engine, request)
    assert names(contexts, 0, {"blurry": text("blurry"), "sharp": text("sharp")}) == [
        "blurry",
        "blurry",
        "blurry",
        "sharp",
    ]


def test_img2img_plans_over_all_its_steps_though_it_runs_the_last_ones(engine, text, tmp_path):
    from pipeline.png import png_bytes

    source = run(engine, SMALL)[0]
    init = tmp_path / "init.png"
    init.write_bytes(png_bytes(source.image, source.parameters))
    request = replace(EULER, prompt="[cat:dog:0.5]", mode=Mode.IMG2IMG, init_image=str(init))
    seen = {"cat": text("cat"), "dog": text("dog")}
    # 8 steps: when 4. Strength 0.5 runs int(0.5 x 8) + 1 = 5 calls, all up to call 4: cat.
    with unet_contexts(engine) as contexts:
        run(engine, request, strength=0.5)
    assert names(contexts, 1, seen) == ["cat"] * 5
    with unet_contexts(engine) as contexts:
        run(engine, request, strength=1.0)
    assert names(contexts, 1, seen) == ["cat"] * 5 + ["dog"] * 3


def test_and_parts_of_different_lengths_are_padded_with_their_last_vector(engine, text):
    long = ", ".join(f"detail {word}" for word in range(40))
    request = replace(EULER, prompt=f"a cat AND {long}", steps=2)
    with unet_contexts(engine) as contexts:
        run(engine, request)
    # The negative runs at its own length (one call), the two parts together (another).
    uncond, cond = contexts[0], contexts[1]
    assert uncond.shape[:2] == (1, 77) and cond.shape[:2] == (2, 154)
    short = text("a cat")
    padded = torch.cat([short, short[:, -1:].repeat(1, 77, 1)], dim=1)  # A1111's stack_conds
    torch.testing.assert_close(cond[:1], padded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cond[1:], text(f" {long}"), rtol=1e-5, atol=1e-5)


def test_a_batch_keeps_each_images_own_schedule(engine):
    prompts = ("[cat:dog:0.5]", "a cat", "[cat|dog] AND a fox:0.5")
    alone = [pixels(run(engine, EULER, prompt=prompt, steps=4)[0]) for prompt in prompts]
    tasks = [
        ImageTask(f"job{index}", 0, replace(EULER, prompt=prompt, steps=4))
        for index, prompt in enumerate(prompts)
    ]
    batched = {r.task.job_id: r for r in engine.run(tasks, lambda *_: None, lambda: False)}
    for task, expected in zip(tasks, alone, strict=True):
        assert np.abs(pixels(batched[task.job_id]).astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(alone[0].astype(int) - alone[1].astype(int)).max() > 1
