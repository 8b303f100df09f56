"""Patching gives diffusers' own LoRA results, scales with the weight, and always restores."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipeline.errors import UserError
from pipeline.lora import patcher
from pipeline.lora.adapter import Adapter, ModuleFactors, load_adapter
from pipeline.lora.patcher import apply_loras
from pipeline.tiny import TINY_WIDTH, build_tiny_components


def _outputs(
    parts: dict[str, Any], inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-encoder hidden states and one UNet noise prediction on fixed inputs."""
    with torch.no_grad():
        hidden = parts["text_encoder"](inputs["ids"])[0]
        noise = parts["unet"](
            inputs["latents"], inputs["timestep"], encoder_hidden_states=hidden
        ).sample
    return hidden, noise


def _state(parts: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name in ("unet", "text_encoder")
        for key, value in parts[name].state_dict().items()
    }


def _assert_bitwise_equal(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert not changed, changed[:5]


@pytest.mark.parametrize("name", ["lora", "lora_no_alpha", "peft", "diffusers_2023"])
def test_patched_outputs_match_diffusers_load_lora_weights(tiny_files, fixed_inputs, name):
    from diffusers import StableDiffusionPipeline

    reference = build_tiny_components()
    pipe = StableDiffusionPipeline(
        **reference, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(str(tiny_files[name]), adapter_name="test")
    pipe.set_adapters(["test"], adapter_weights=[0.7])
    expected = _outputs(reference, fixed_inputs)

    ours = build_tiny_components()
    adapter = load_adapter(tiny_files[name], TINY_WIDTH)
    with apply_loras(ours["unet"], ours["text_encoder"], [(adapter, 0.7, 0.7)]):
        got = _outputs(ours, fixed_inputs)
    for mine, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


def test_weight_zero_gives_the_base_output_exactly(tiny, tiny_files, fixed_inputs):
    base = _outputs(tiny, fixed_inputs)
    adapter = load_adapter(tiny_files["locon"], TINY_WIDTH)
    with apply_loras(tiny["unet"], tiny["text_encoder"], [(adapter, 0.0, 0.0)]):
        patched = _outputs(tiny, fixed_inputs)
    for a, b in zip(base, patched, strict=True):
        assert torch.equal(a, b)


def test_text_weight_zero_leaves_the_text_encoder_alone(tiny, tiny_files, fixed_inputs):
    base_hidden, base_noise = _outputs(tiny, fixed_inputs)
    adapter = load_adapter(tiny_files["lora"], TINY_WIDTH)
    with apply_loras(tiny["unet"], tiny["text_encoder"], [(adapter, 0.0, 1.0)]):
        hidden, noise = _outputs(tiny, fixed_inputs)
    assert torch.equal(hidden, base_hidden)
    assert not torch.allclose(noise, base_noise)


def test_model_is_restored_bit_for_bit_after_several_loras(tiny, tiny_files):
    before = _state(tiny)
    loras = [(load_adapter(tiny_files[k], TINY_WIDTH), 0.8, -0.6) for k in ("lora", "loha", "lokr")]
    with apply_loras(tiny["unet"], tiny["text_encoder"], loras):
        patched = _state(tiny)
        assert [key for key in before if not torch.equal(before[key], patched[key])]
    _assert_bitwise_equal(before, _state(tiny))


def test_model_is_restored_when_the_body_raises(tiny, tiny_files):
    before = _state(tiny)
    adapter = load_adapter(tiny_files["locon_mid"], TINY_WIDTH)
    with (
        pytest.raises(RuntimeError, match="sampling failed"),
        apply_loras(
            tiny["unet"], tiny["text_encoder"], [(adapter, 1.0, 1.0)], stash=torch.device("cpu")
        ),
    ):
        assert not torch.equal(
            _state(tiny)["unet.down_blocks.0.resnets.0.conv1.weight"],
            before["unet.down_blocks.0.resnets.0.conv1.weight"],
        )
        raise RuntimeError("sampling failed")
    _assert_bitwise_equal(before, _state(tiny))


def test_model_is_restored_when_patching_fails_midway(tiny, tiny_files, monkeypatch):
    before = _state(tiny)
    adapter = load_adapter(tiny_files["lora"], TINY_WIDTH)
    real = patcher.module_delta
    calls = iter(range(1000))

    def failing(*args, **kwargs):
        if next(calls) == 10:
            raise MemoryError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(patcher, "module_delta", failing)
    with (
        pytest.raises(MemoryError),
        apply_loras(tiny["unet"], tiny["text_encoder"], [(adapter, 1.0, 1.0)]),
    ):
        pass
    _assert_bitwise_equal(before, _state(tiny))


@pytest.mark.parametrize(
    "name", ["lora", "locon", "locon_mid", "loha", "loha_tucker", "lokr", "lokr_tucker", "peft"]
)
def test_each_kind_changes_the_unet_output_in_proportion_to_its_weight(
    tiny, tiny_files, fixed_inputs, name
):
    _, base = _outputs(tiny, fixed_inputs)
    adapter = load_adapter(tiny_files[name], TINY_WIDTH)

    def change(weight: float) -> float:
        with apply_loras(tiny["unet"], tiny["text_encoder"], [(adapter, 0.0, weight)]):
            _, noise = _outputs(tiny, fixed_inputs)
        return (noise - base).norm().item()

    small, double, large = change(0.01), change(0.02), change(0.5)
    assert 0 < small < double < large
    assert double / small == pytest.approx(2.0, rel=0.1)


def test_adapter_for_other_modules_is_refused_before_patching(tiny):
    """Upload refuses such a file already; a model that differs from the upload-time one too."""
    before = _state(tiny)
    generator = torch.Generator().manual_seed(0)
    modules = tuple(
        ModuleFactors(
            "unet",
            name,
            "lora",
            {"down": torch.randn(2, 32, generator=generator), "up": torch.randn(32, 2)},
        )
        for name in (
            "down_blocks_9_attentions_0_proj_in",
            "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        )
    )
    adapter = Adapter(sha256="0" * 64, kind="lora", modules=modules)
    with (
        pytest.raises(UserError, match=r"lacks.*down_blocks_9_attentions_0_proj_in"),
        apply_loras(tiny["unet"], tiny["text_encoder"], [(adapter, 1.0, 1.0)]),
    ):
        pass
    _assert_bitwise_equal(before, _state(tiny))


def test_full_size_file_is_refused_for_the_tiny_model(full_files):
    with pytest.raises(UserError, match="text width"):
        load_adapter(full_files["lora"], TINY_WIDTH)
