"""Hypernetworks: A1111's files recognised and checked, and its MLPs applied where A1111 does.

The reference is built in the test from A1111's recipe (`A1111Module`) and applied by hand to the
key and value inputs of one attention module; the engine's hooks must give the same result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.errors import UserError
from pipeline.lora.adapter import load_adapter
from pipeline.lora.hypernetwork import apply_hypernetworks, load_hypernetwork, projection_widths
from pipeline.lora.inspection import inspect_file
from pipeline.tiny import build_tiny_components
from tests.bot.library_files import write_lora
from tests.pipeline.lora.hypernet_files import a1111_hypernetwork, write_converted

TINY_WIDTHS = (32, 64)
SD1_WIDTHS = (320, 640, 768, 1280)


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return build_tiny_components()["unet"].eval()


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).detach().norm() / expected.detach().norm())


def manual_attention(attn, hidden, context_k, context_v):
    """diffusers' attention computed by hand from given key and value inputs."""
    batch = hidden.shape[0]
    q, k, v = attn.to_q(hidden), attn.to_k(context_k), attn.to_v(context_v)
    heads = attn.heads

    def split(t):
        return t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    out = out.transpose(1, 2).reshape(batch, -1, heads * (q.shape[-1] // heads))
    return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("layer_norm", [False, True])
def test_hooks_equal_a1111_mlps_applied_by_hand(unet, tmp_path, layer_norm) -> None:
    saved, reference = a1111_hypernetwork(TINY_WIDTHS, layer_norm=layer_norm)
    network = load_hypernetwork(write_converted(saved, tmp_path / "h.safetensors"), TINY_WIDTHS)
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    cross, own = block.attn2, block.attn1
    hidden = torch.randn(2, 16, cross.to_q.in_features)
    text = torch.randn(2, 7, 32)
    strength = 0.7
    for module in (m for pair in reference.values() for m in pair):
        module.multiplier = strength
    with torch.no_grad():
        key, value = reference[32]
        expected_cross = manual_attention(cross, hidden, key(text), value(text))
        own_key, own_value = reference[hidden.shape[-1]]
        expected_self = manual_attention(own, hidden, own_key(hidden), own_value(hidden))
        with apply_hypernetworks(unet, [(network, strength)]):
            found_k = cross.to_k(text)
            found_cross = cross(hidden, encoder_hidden_states=text)
            found_self = own(hidden)
    assert relative_error(found_k, cross.to_k(key(text))) < 1e-5
    assert relative_error(found_cross, expected_cross) < 1e-5
    assert relative_error(found_self, expected_self) < 1e-5


def test_several_hypernetworks_chain_in_prompt_order(unet, tmp_path) -> None:
    first_saved, first = a1111_hypernetwork(TINY_WIDTHS, seed=1)
    second_saved, second = a1111_hypernetwork(TINY_WIDTHS, seed=2)
    one = load_hypernetwork(write_converted(first_saved, tmp_path / "1.safetensors"), TINY_WIDTHS)
    two = load_hypernetwork(write_converted(second_saved, tmp_path / "2.safetensors"), TINY_WIDTHS)
    to_v = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_v
    text = torch.randn(1, 5, 32)
    with torch.no_grad():
        expected = to_v(second[32][1](first[32][1](text)))
        with apply_hypernetworks(unet, [(one, 1.0), (two, 1.0)]):
            in_order = to_v(text)
        with apply_hypernetworks(unet, [(two, 1.0), (one, 1.0)]):
            swapped = to_v(text)
    assert relative_error(in_order, expected) < 1e-5
    assert relative_error(swapped, expected) > 1e-3


def test_hooks_are_removed_also_when_the_body_raises(unet, tmp_path) -> None:
    saved, _ = a1111_hypernetwork(TINY_WIDTHS)
    network = load_hypernetwork(write_converted(saved, tmp_path / "h.safetensors"), TINY_WIDTHS)
    projections = [m for name, m in unet.named_modules() if name.endswith(("to_k", "to_v"))]
    with pytest.raises(RuntimeError), apply_hypernetworks(unet, [(network, 1.0)]):
        assert all(p._forward_pre_hooks for p in projections)
        raise RuntimeError("boom")
    assert not any(p._forward_pre_hooks for p in projections)


def test_strength_zero_adds_no_hook(unet, tmp_path) -> None:
    saved, _ = a1111_hypernetwork(TINY_WIDTHS)
    network = load_hypernetwork(write_converted(saved, tmp_path / "h.safetensors"), TINY_WIDTHS)
    with apply_hypernetworks(unet, [(network, 0.0)]):
        assert not any(m._forward_pre_hooks for m in unet.modules())


def test_the_tiny_unet_reads_widths_32_and_64(unet) -> None:
    assert projection_widths(unet) == set(TINY_WIDTHS)


# --- recognising and checking files, at upload ---


def inspect(path: Path):
    return inspect_file(path, 768, SD1_WIDTHS)


def sd1_file(tmp_path: Path, name: str = "h", **options) -> tuple[dict, Path]:
    saved, _ = a1111_hypernetwork((320, 768), scale=0.01, **options)
    return saved, write_converted(saved, tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"layer_norm": True},
        {"activation": "swish", "activate_output": True},
        {"activation": "linear"},
        {"structure": (1, 1.5, 1.5, 1), "dropout": (0, 0.3, 0.3, 0)},
        {"structure": (1, 2, 1), "dropout": (0, 0.3, 0)},
    ],
    ids=["relu", "norm", "swish-output", "linear", "dropout-deep", "dropout"],
)
def test_a1111_files_are_recognised_with_their_options(tmp_path, options) -> None:
    _, path = sd1_file(tmp_path, **options)
    result = inspect(path)
    assert result.ok, result.reason
    assert (result.kind, result.base, result.modules) == ("hypernetwork", "sd1", 2)
    assert result.hypernet is not None and result.hypernet.widths == (320, 768)
    assert result.hypernet.structure == tuple(float(f) for f in options.get("structure", (1, 2, 1)))


def test_missing_options_take_a1111s_load_defaults(tmp_path) -> None:
    """Without `activate_output` A1111 activates the last layer too; no `activation_func` at
    all means no activation, which shifts no index, so both files stay readable."""
    saved, _ = a1111_hypernetwork((768,), activate_output=True)
    path = write_converted(saved, tmp_path / "old.safetensors", drop=("activate_output",))
    result = inspect(path)
    assert result.ok and result.hypernet is not None and result.hypernet.activate_output
    mismatched = write_converted(
        a1111_hypernetwork((768,), layer_norm=True)[0],
        tmp_path / "no-norm-field.safetensors",
        drop=("is_layer_norm",),
    )
    assert "make A1111 expect" in str(inspect(mismatched).reason)


def test_a_hypernetwork_is_not_a_lora_and_a_lora_is_not_a_hypernetwork(tmp_path) -> None:
    _, path = sd1_file(tmp_path)
    with pytest.raises(UserError, match="is a hypernetwork, not a LoRA"):
        load_adapter(path)
    lora = write_lora(tmp_path / "lora.safetensors")
    with pytest.raises(UserError, match="is not a hypernetwork"):
        load_hypernetwork(lora, TINY_WIDTHS)
    assert inspect_file(lora, 32, TINY_WIDTHS).kind == "lora"


def write_raw(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    save_file(tensors, str(path), metadata={"format": "dreamcord-hypernetwork", **(metadata or {})})
    return path


def tensors_of(saved: dict) -> dict[str, torch.Tensor]:
    return {
        f"{width}.{half}.{name}": tensor.clone()
        for width, pair in saved.items()
        if isinstance(width, int)
        for half, state in enumerate(pair)
        for name, tensor in state.items()
    }


def drop_weight(tensors: dict) -> None:
    del tensors["320.1.linear.0.weight"]


def drop_value_half(tensors: dict) -> None:
    for key in [key for key in tensors if key.startswith("320.1.")]:
        del tensors[key]


def break_chain(tensors: dict) -> None:
    tensors["320.0.linear.2.weight"] = torch.zeros(320, 1000)


def misshape(tensors: dict) -> None:
    tensors["768.0.linear.2.weight"] = torch.zeros(768, 1000)


def poison(tensors: dict) -> None:
    tensors["768.0.linear.0.bias"] = torch.full((1536,), float("nan"))


def inflate(tensors: dict) -> None:
    tensors["768.1.linear.2.bias"] = torch.full((768,), 5e3)


def add_sd2_width(tensors: dict) -> None:
    tensors["1024.0.linear.0.weight"] = torch.zeros(2048, 1024)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (drop_weight, "numbers of layers"),
        (drop_value_half, "lacks the key or value half of some widths: 320.1"),
        (break_chain, "layer shapes of its MLPs for width 320 do not chain"),
        (misshape, "768.0.linear.2.weight has shape [768, 1000], not [768, 1536]"),
        (poison, "NaN or infinite"),
        (inflate, "far past what training makes"),
        (add_sd2_width, "made for SD2.x"),
    ],
)
def test_broken_files_are_refused_at_upload(tmp_path, change, reason) -> None:
    saved, _ = a1111_hypernetwork((320, 768), scale=0.01)
    tensors = tensors_of(saved)
    change(tensors)
    metadata = {"activation_func": json.dumps("relu"), "activate_output": "false"}
    result = inspect(write_raw(tmp_path / "bad.safetensors", tensors, metadata))
    assert (result.ok, result.kind) == (False, "hypernetwork")
    assert reason in str(result.reason)


def test_an_unsupported_activation_is_refused(tmp_path) -> None:
    saved, _ = a1111_hypernetwork((768,), scale=0.01)
    saved["activation_func"] = "prelu"
    result = inspect(write_converted(saved, tmp_path / "p.safetensors"))
    assert not result.ok and "activation 'prelu'" in str(result.reason)


def test_widths_the_model_does_not_read_are_refused(tmp_path) -> None:
    _, path = sd1_file(tmp_path)
    result = inspect_file(path, 32, TINY_WIDTHS)
    assert not result.ok and "width 320, 768" in str(result.reason)


def test_the_first_a1111_key_names_are_read_as_its_loader_renames_them(unet, tmp_path) -> None:
    """Files from before layer structures wrote `linear1`/`linear2`, two Linears and nothing
    between them; A1111 renames them to `linear.0`/`linear.1`."""
    saved, reference = a1111_hypernetwork((32,), activation=None)
    for pair in saved[32]:
        for old, new in (("linear1", "linear.0"), ("linear2", "linear.1")):
            for param in ("weight", "bias"):
                pair[f"{old}.{param}"] = pair.pop(f"{new}.{param}")
    del saved["activation_func"]
    network = load_hypernetwork(write_converted(saved, tmp_path / "old.safetensors"), (32, 64))
    to_k = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k
    text = torch.randn(1, 4, 32)
    with torch.no_grad(), apply_hypernetworks(unet, [(network, 1.0)]):
        found = to_k(text)
    with torch.no_grad():
        expected = to_k(reference[32][0](text))
    assert relative_error(found, expected) < 1e-5


@pytest.mark.parametrize(
    ("field", "value", "outcome"),
    [
        ("activation_func", [1], "activation '[1]'"),
        ("is_layer_norm", "yes", "is_layer_norm is not true or false"),
        ("layer_structure", [1, 1e308, 1], None),
        ("dropout_structure", [0, 2, 0], "dropout_structure does not fit"),
    ],
)
def test_odd_metadata_is_a_refusal_or_ignored_never_a_crash(tmp_path, field, value, outcome):
    saved, _ = a1111_hypernetwork((768,), scale=0.01)
    saved[field] = value
    result = inspect(write_converted(saved, tmp_path / "odd.safetensors"))
    if outcome is None:
        assert result.ok and result.hypernet is not None
        assert result.hypernet.structure == (1.0, 2.0, 1.0)
    else:
        assert not result.ok and outcome in str(result.reason)
