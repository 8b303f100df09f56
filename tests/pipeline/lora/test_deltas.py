"""Each family's delta is the one its trainer meant, checked against lycoris and against convs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.lora.deltas import delta_shape, module_delta
from tests.pipeline.lora import make_files as mf


def _parts(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """File tensors -> the part names the delta builders use."""
    return {name.removeprefix(prefix): t for name, t in tensors.items()}


def _lora(shape, rank=3, mid=False, alpha=1.5):
    parts = mf.lora_parts(torch.Size(shape), rank, torch.Generator().manual_seed(0), mid=mid)
    names = {"lora_down.weight": "down", "lora_up.weight": "up", "lora_mid.weight": "mid"}
    return {names[k]: v for k, v in parts.items()} | {"alpha": torch.tensor(alpha)}


def test_linear_lora_delta_is_up_at_down_times_alpha_over_rank():
    parts = _lora((8, 6))
    delta = module_delta("lora", parts, torch.Size((8, 6)))
    torch.testing.assert_close(delta, parts["up"] @ parts["down"] * 1.5 / 3)


def test_missing_alpha_means_alpha_equals_rank():
    parts = _lora((8, 6))
    del parts["alpha"]
    torch.testing.assert_close(
        module_delta("lora", parts, torch.Size((8, 6))), parts["up"] @ parts["down"]
    )


@pytest.mark.parametrize(("kernel", "mid"), [(1, False), (3, False), (3, True)])
def test_conv_lora_delta_acts_like_the_chained_convs(kernel, mid):
    """A conv with the delta must equal down-conv, (mid-conv), up-conv applied in turn."""
    shape = (8, 6, kernel, kernel)
    parts = _lora(shape, mid=mid)
    x = torch.randn(1, 6, 7, 7, generator=torch.Generator().manual_seed(2))
    pad = kernel // 2
    chained = F.conv2d(x, parts["down"], padding=0 if mid else pad)
    if mid:
        chained = F.conv2d(chained, parts["mid"], padding=pad)
    chained = F.conv2d(chained, parts["up"]) * 1.5 / 3
    delta = module_delta("lora", parts, torch.Size(shape))
    torch.testing.assert_close(F.conv2d(x, delta, padding=pad), chained, atol=1e-5, rtol=1e-4)


def test_two_dimensional_factors_fit_a_one_by_one_conv():
    parts = _lora((8, 6))
    delta = module_delta("lora", parts, torch.Size((8, 6, 1, 1)))
    assert delta.shape == (8, 6, 1, 1)


@pytest.mark.parametrize(
    ("shape", "tucker"), [((8, 6), False), ((8, 6, 3, 3), False), ((8, 6, 3, 3), True)]
)
def test_loha_delta_matches_lycoris(shape, tucker):
    from lycoris.functional import loha

    tensors = mf.loha_parts(torch.Size(shape), 2, torch.Generator().manual_seed(0), tucker=tucker)
    parts = _parts(tensors, "hada_") | {"alpha": torch.tensor(1.0)}
    weights = (
        parts["w1_b"],
        parts["w1_a"],
        parts["w2_b"],
        parts["w2_a"],
        parts.get("t1"),
        parts.get("t2"),
    )
    expected = loha.diff_weight(*weights, gamma=1.0 / 2, backend="torch")
    delta = module_delta("loha", parts, torch.Size(shape))
    torch.testing.assert_close(delta, expected.reshape(shape), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("shape", "tucker"), [((8, 12), False), ((8, 12, 3, 3), False), ((8, 12, 3, 3), True)]
)
def test_lokr_delta_matches_lycoris(shape, tucker):
    from lycoris.functional import lokr

    tensors = mf.lokr_parts(torch.Size(shape), 2, torch.Generator().manual_seed(0), tucker=tucker)
    parts = _parts(tensors, "lokr_") | {"alpha": torch.tensor(3.0)}
    expected = lokr.kron_weight(
        parts["w1"],
        None,
        None,
        None,
        parts["w2_a"],
        parts["w2_b"],
        parts.get("t2"),
        scale=3.0 / 2,
        backend="torch",
    )
    delta = module_delta("lokr", parts, torch.Size(shape))
    torch.testing.assert_close(delta, expected.reshape(shape), atol=1e-6, rtol=1e-5)


def test_lokr_scale_agrees_with_lycoris_diff_weight_for_factored_w1():
    from lycoris.functional import lokr

    generator = torch.Generator().manual_seed(0)
    parts = {
        "w1_a": torch.randn(4, 2, generator=generator),
        "w1_b": torch.randn(2, 4, generator=generator),
        "w2_a": torch.randn(2, 2, generator=generator),
        "w2_b": torch.randn(2, 3, generator=generator),
        "alpha": torch.tensor(1.0),
    }
    expected = lokr.diff_weight(
        None,
        parts["w1_a"],
        parts["w1_b"],
        None,
        parts["w2_a"],
        parts["w2_b"],
        None,
        gamma=1.0,
        backend="torch",
    )
    torch.testing.assert_close(module_delta("lokr", parts, torch.Size((8, 12))), expected)


def test_lokr_with_both_sides_whole_ignores_alpha():
    parts = {"w1": torch.eye(2), "w2": torch.ones(3, 3), "alpha": torch.tensor(7.0)}
    torch.testing.assert_close(
        module_delta("lokr", parts, torch.Size((6, 6))), torch.kron(torch.eye(2), torch.ones(3, 3))
    )


def test_delta_that_does_not_fit_the_weight_raises():
    with pytest.raises(ValueError, match="does not fit"):
        module_delta("lora", _lora((8, 6)), torch.Size((8, 7)))


def test_delta_shape_reads_shapes_only_and_rejects_broken_chains():
    assert delta_shape("lora", {"down": (2, 6), "up": (8, 2), "alpha": ()}) == (8, 6)
    with pytest.raises(ValueError):
        delta_shape("lora", {"down": (2, 6), "up": (8, 3)})
