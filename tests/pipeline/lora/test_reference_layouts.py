"""Adapter files as trainers write them, patched into full-size SD1.5, match independent references.

The files come from `world_names`, which spells module names the way kohya sd-scripts, diffusers
and LyCORIS do, from the documented SD1.5 layout (never from the model under test). Each patched
weight is compared with diffusers' own loader (`load_lora_weights` + `fuse_lora`), with the
`lycoris-lora` package's modules, or, where no library maps the names (the old LDM layout), with
a delta computed here by hand on the layer our own LDM table names.

The model is `sd15-random` (full size, random weights, fp32, CPU), built once per session.
"""

from __future__ import annotations

import copy
import os
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pipeline.lora.adapter import load_adapter
from pipeline.lora.inspection import inspect_file
from pipeline.lora.patcher import apply_loras, resolve_targets
from tests.pipeline.lora import world_names as wn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RANK = 4
ALPHA = 2.0
TOLERANCE = 1e-5
"""Relative error allowed, measured against the size of the delta (fp32 throughout)."""


# --- the model and its pristine twin ---------------------------------------------------------


@pytest.fixture(scope="session")
def sd15() -> dict[str, Any]:
    """The model under test, with fixed inputs and its outputs on them before any LoRA.

    Tests that patch it must leave it as they found it.
    """
    from pipeline.tiny import build_sd15_random_components

    parts = build_sd15_random_components(seed=0)
    parts["inputs"] = fixed_inputs(parts["tokenizer"])
    parts["baseline"] = outputs(parts, parts["inputs"])  # before any test patches it
    return parts


@pytest.fixture(scope="session")
def twin(sd15: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the UNet and text encoder: the pristine weights, and diffusers' model.

    Tests that let diffusers fuse into it put the touched weights back (see `diffusers_fused`).
    """
    return {
        "unet": copy.deepcopy(sd15["unet"]),
        "text_encoder": copy.deepcopy(sd15["text_encoder"]),
    }


def layer(parts: dict[str, Any], target: wn.Target) -> nn.Module:
    """The model's layer for a table entry: the test's own mapping from world names to modules.

    Text-encoder paths in the table are transformers 4's; transformers 5 dropped `text_model.`.
    """
    if target.component == "unet":
        return parts["unet"].get_submodule(target.path)
    text_encoder = parts["text_encoder"]
    path = target.path
    if not hasattr(text_encoder, "text_model"):
        path = path.removeprefix("text_model.")
    return text_encoder.get_submodule(path)


def relative_error(actual: torch.Tensor, expected: torch.Tensor, pristine: torch.Tensor) -> float:
    """|actual - expected| / |expected - pristine|: the error as a share of the delta itself."""
    actual, expected, pristine = actual.detach(), expected.detach(), pristine.detach()
    delta = (expected.double() - pristine.double()).norm()
    assert delta > 0, "the reference did not change this weight"
    return float((actual.double() - expected.double()).norm() / delta)


def assert_matches(
    sd15: dict[str, Any],
    targets: list[wn.Target],
    expected: dict[str, torch.Tensor],
    pristine: dict[str, torch.Tensor],
) -> None:
    """Every target's patched weight (in `sd15`) equals `expected`, within TOLERANCE."""
    errors = {
        t.path: relative_error(layer(sd15, t).weight, expected[t.path], pristine[t.path])
        for t in targets
    }
    bad = {path: error for path, error in errors.items() if error >= TOLERANCE}
    assert not bad, f"{len(bad)} of {len(errors)} weights differ: " + ", ".join(
        f"{path} ({error:.1e})" for path, error in list(bad.items())[:4]
    )


def patched(
    sd15: dict[str, Any], path: Path, te_weight: float, unet_weight: float
) -> AbstractContextManager[None]:
    """The project's patcher, with the file loaded the way the bot loads it."""
    adapter = load_adapter(path, model_width=wn.TEXT_WIDTH)
    return apply_loras(sd15["unet"], sd15["text_encoder"], [(adapter, te_weight, unet_weight)])


# --- files ----------------------------------------------------------------------------------

FULL = wn.text_encoder_targets() + wn.unet_attention_targets()
SAMPLE = wn.sample_targets()
SAMPLE_CONV = wn.sample_targets(conv=True)
STRAY_BASE = SAMPLE + [
    t for t in wn.unet_attention_targets() if t.path.startswith("down_blocks.1.attentions.0.")
]
"""72 modules, 216 keys: the part of the stray file that does match."""
FULL_LDM = wn.text_encoder_targets()[:6] + wn.unet_attention_targets() + wn.unet_conv_targets()


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per layout, written from the world table."""
    folder = tmp_path_factory.mktemp("world-loras")
    made: dict[str, wn.Tensors] = {
        # Whole tables, for name resolution (no deltas computed).
        "kohya_full": wn.kohya_lora(FULL, RANK, ALPHA),
        "kohya_te1_full": wn.kohya_lora(FULL, RANK, ALPHA, te_prefix="lora_te1_"),
        "kohya_lora_ab_full": wn.kohya_lora(FULL, RANK, ALPHA, peft_parts=True),
        "ldm_full": wn.kohya_lora(FULL_LDM, 2, 1.0, ldm=True),
        "peft_transformers4_full": wn.peft_lora(FULL, RANK, "transformers4"),
        "peft_transformers5_full": wn.peft_lora(FULL, RANK, "transformers5"),
        # Samples of every layer kind, for the numeric references.
        # sd-scripts' default: text encoder and UNet, fp16, alpha below rank.
        "kohya": wn.kohya_lora(SAMPLE, RANK, ALPHA),
        "kohya_te1": wn.kohya_lora(SAMPLE, RANK, ALPHA, te_prefix="lora_te1_"),
        "kohya_lora_ab": wn.kohya_lora(SAMPLE, RANK, ALPHA, peft_parts=True),  # kohya's factors
        "ldm": wn.kohya_lora(SAMPLE_CONV, 2, 1.0, ldm=True),
        "peft_transformers4": wn.peft_lora(SAMPLE, RANK, "transformers4"),
        "peft_transformers5": wn.peft_lora(SAMPLE, RANK, "transformers5"),
        "locon": wn.kohya_lora(SAMPLE_CONV, RANK, ALPHA, dtype=torch.float32),
        "loha": wn.lycoris_file(SAMPLE_CONV, wn.loha_parts, RANK, ALPHA),
        "lokr": wn.lycoris_file(SAMPLE_CONV, wn.lokr_parts, RANK, ALPHA),
        "dora": wn.kohya_lora(SAMPLE_CONV, RANK, ALPHA, dtype=torch.float32, dora="input"),
        "dora_out": wn.kohya_lora(SAMPLE_CONV, RANK, ALPHA, dtype=torch.float32, dora="output"),
        "bundle": wn.kohya_lora(SAMPLE, RANK, ALPHA)
        | wn.bundled_embedding("dreamtok", 2)
        | wn.bundled_embedding("sharpfocus", 1, layout="safetensors", seed=1),
        "stray": wn.kohya_lora(STRAY_BASE, RANK, ALPHA) | wn.stray_module(),
        "mostly_foreign": wn.kohya_lora(SAMPLE[:2], RANK, ALPHA) | wn.foreign_modules(40),
    }
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(RANK)}
    return {kind: wn.write(folder / f"{kind}.safetensors", t, metadata) for kind, t in made.items()}


# --- the table itself -----------------------------------------------------------------------


def test_world_table_has_the_sd15_layer_counts() -> None:
    assert len(wn.text_encoder_targets()) == 72
    assert len(wn.unet_attention_targets()) == 16 * 12
    # down: 8 resnets, 6 transformers, 3 downsamplers; mid: 3; up: 12, 9 and 3 upsamplers
    assert len(wn.ldm_block_table()) == 8 + 6 + 3 + 3 + 12 + 9 + 3
    assert len(wn.unet_conv_targets()) == 86


@pytest.mark.parametrize(
    ("diffusers", "ldm"),
    [
        ("down_blocks.0.attentions.1.proj_in", "input_blocks.2.1.proj_in"),
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        ),
        ("down_blocks.2.attentions.1.proj_out", "input_blocks.8.1.proj_out"),
        (
            "mid_block.attentions.0.transformer_blocks.0.ff.net.2",
            "middle_block.1.transformer_blocks.0.ff.net.2",
        ),
        ("up_blocks.1.attentions.2.proj_in", "output_blocks.5.1.proj_in"),
        ("up_blocks.2.attentions.0.proj_in", "output_blocks.6.1.proj_in"),
        ("up_blocks.3.attentions.2.proj_out", "output_blocks.11.1.proj_out"),
        ("down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("down_blocks.3.resnets.1.conv2", "input_blocks.11.0.out_layers.3"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
        ("up_blocks.0.resnets.2.conv1", "output_blocks.2.0.in_layers.2"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
        ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ],
)
def test_ldm_table_follows_the_documented_block_mapping(diffusers: str, ldm: str) -> None:
    assert wn.ldm_path(diffusers) == ldm


def test_world_table_shapes_are_those_of_the_sd15_model(sd15: dict[str, Any]) -> None:
    """The table was written from the architecture; this only proves it was written right."""
    for target in FULL + wn.unet_conv_targets():
        assert tuple(layer(sd15, target).weight.shape) == target.shape, target.path


# --- inspection of honest files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "modules", "family"),
    [
        ("kohya_full", len(FULL), "lora"),
        ("kohya_te1_full", len(FULL), "lora"),
        ("kohya_lora_ab_full", len(FULL), "lora"),
        ("ldm_full", len(FULL_LDM), "locon"),
        ("peft_transformers4_full", len(FULL), "lora"),
        ("peft_transformers5_full", len(FULL), "lora"),
        ("locon", len(SAMPLE_CONV), "locon"),
        ("loha", len(SAMPLE_CONV), "loha"),
        ("lokr", len(SAMPLE_CONV), "lokr"),
        ("dora", len(SAMPLE_CONV), None),
        ("dora_out", len(SAMPLE_CONV), None),
        ("bundle", len(SAMPLE), "lora"),
    ],
)
def test_real_layouts_pass_inspection_as_sd1(
    files: dict[str, Path], kind: str, modules: int, family: str | None
) -> None:
    inspection = inspect_file(files[kind], wn.TEXT_WIDTH)
    assert inspection.ok, inspection.reason
    assert inspection.base == "sd1"
    assert inspection.modules == modules
    if family is not None:
        assert inspection.kind == family


# --- every name of a whole table finds its layer --------------------------------------------


@pytest.mark.parametrize(
    ("kind", "targets"),
    [
        ("kohya_full", FULL),
        ("kohya_te1_full", FULL),
        ("kohya_lora_ab_full", FULL),
        ("ldm_full", FULL_LDM),
        ("peft_transformers4_full", FULL),
        ("peft_transformers5_full", FULL),
    ],
)
def test_every_module_of_a_whole_table_resolves_to_its_layer(
    sd15: dict[str, Any], files: dict[str, Path], kind: str, targets: list[wn.Target]
) -> None:
    """Issue #14: each module the trainer named is matched to the layer the table names, and to
    no other (nothing is skipped, no layer is hit twice)."""
    adapter = load_adapter(files[kind], model_width=wn.TEXT_WIDTH)
    resolved = [
        module for module, _ in resolve_targets(adapter, sd15["unet"], sd15["text_encoder"])
    ]
    assert len(resolved) == len(targets)
    assert {id(m) for m in resolved} == {id(layer(sd15, t)) for t in targets}


# --- against diffusers ----------------------------------------------------------------------


def diffusers_fused(
    sd15: dict[str, Any], twin: dict[str, Any], path: Path, weight: float, targets: list[wn.Target]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(fused, pristine) weights of `targets` after diffusers loads `path` and fuses it at
    `weight`; the twin gets its pristine weights back."""
    from diffusers import StableDiffusionPipeline

    pristine = {t.path: layer(twin, t).weight.detach().clone() for t in targets}
    pipe = StableDiffusionPipeline(
        vae=sd15["vae"],
        text_encoder=twin["text_encoder"],
        tokenizer=sd15["tokenizer"],
        unet=twin["unet"],
        scheduler=sd15["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    try:
        pipe.load_lora_weights(str(path))
        pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=weight)
        pipe.unload_lora_weights()  # keeps the fused weights, removes the PEFT layers
        fused = {t.path: layer(twin, t).weight.detach().clone() for t in targets}
    finally:
        with torch.no_grad():
            for target in targets:
                layer(twin, target).weight.copy_(pristine[target.path])
    return fused, pristine


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "reference", "targets"),
    [
        ("kohya", "kohya", SAMPLE),
        ("kohya_te1", "kohya_te1", SAMPLE),
        ("kohya_lora_ab", "kohya", SAMPLE),
        ("peft_transformers4", "peft_transformers4", SAMPLE),
        ("peft_transformers5", "peft_transformers5", SAMPLE),
    ],
)
def test_patched_weights_equal_diffusers_fused_lora(
    sd15: dict[str, Any],
    twin: dict[str, Any],
    files: dict[str, Path],
    kind: str,
    reference: str,
    targets: list[wn.Target],
) -> None:
    """Each touched weight is what diffusers' own loader makes of the same file (or, for kohya
    names with lora_A/lora_B parts, of the same factors spelled lora_down/lora_up)."""
    weight = 0.7
    fused, pristine = diffusers_fused(sd15, twin, files[reference], weight, targets)
    with patched(sd15, files[kind], weight, weight):
        assert_matches(sd15, targets, fused, pristine)


@pytest.mark.slow
def test_kohya_text_encoder_lora_touches_the_text_encoder(
    sd15: dict[str, Any], twin: dict[str, Any], files: dict[str, Path]
) -> None:
    """Issue #14: sd-scripts' default file (TE + UNet) patches, and its 72 TE layers change."""
    texts = wn.text_encoder_targets()
    with patched(sd15, files["kohya_full"], 1.0, 0.0):
        changed = [
            t for t in texts if not torch.equal(layer(sd15, t).weight, layer(twin, t).weight)
        ]
    assert len(changed) == 72


# --- the LDM layout, by hand ----------------------------------------------------------------


def kohya_delta(tensors: wn.Tensors, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """up @ down * alpha / rank, with conv factors flattened: sd-scripts' merge, written out."""
    down = tensors[f"{name}.lora_down.weight"].float()
    up = tensors[f"{name}.lora_up.weight"].float()
    rank = down.shape[0]
    alpha = float(tensors[f"{name}.alpha"]) if f"{name}.alpha" in tensors else rank
    return ((up.flatten(1) @ down.flatten(1)) * (alpha / rank)).reshape(shape)


@pytest.mark.slow
def test_ldm_layout_names_patch_the_layers_of_the_block_table(
    sd15: dict[str, Any], twin: dict[str, Any], files: dict[str, Path]
) -> None:
    tensors = load_file(str(files["ldm"]))
    targets = SAMPLE_CONV
    weight = 0.8
    pristine = {t.path: layer(twin, t).weight.detach() for t in targets}
    expected = {
        t.path: pristine[t.path]
        + weight * kohya_delta(tensors, wn.kohya_name(t, ldm=True), t.shape)
        for t in targets
    }
    with patched(sd15, files["ldm"], weight, weight):
        assert_matches(sd15, targets, expected, pristine)


# --- against LyCORIS ------------------------------------------------------------------------


def _parts(tensors: wn.Tensors, name: str, *parts: str) -> list[torch.Tensor | None]:
    return [tensors[f"{name}.{p}"].float() if f"{name}.{p}" in tensors else None for p in parts]


def lycoris_module(kind: str, tensors: wn.Tensors, target: wn.Target, original: nn.Module):
    """The LyCORIS module a file's factors make around `original` (not applied to it)."""
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    name = wn.kohya_name(target)
    (alpha,) = _parts(tensors, name, "alpha")
    if kind == "locon":
        up, down = _parts(tensors, name, "lora_up.weight", "lora_down.weight")
        return LoConModule.make_module_from_state_dict(name, original, up, down, None, alpha, None)
    if kind == "loha":
        w1a, w1b, w2a, w2b = _parts(
            tensors, name, "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"
        )
        return LohaModule.make_module_from_state_dict(
            name, original, w1a, w1b, w2a, w2b, None, None, alpha, None
        )
    if kind == "lokr":
        w1, w2a, w2b = _parts(tensors, name, "lokr_w1", "lokr_w2_a", "lokr_w2_b")
        return LokrModule.make_module_from_state_dict(
            name, original, w1, None, None, None, w2a, w2b, None, None, alpha, None
        )
    if kind in ("dora", "dora_out"):
        # A1111/kohya-style files keep one magnitude per input column (LyCORIS' wd_on_out=False),
        # LyCORIS' own default one per output row (wd_on_out=True).
        up, down, scale = _parts(tensors, name, "lora_up.weight", "lora_down.weight", "dora_scale")
        module = LoConModule(
            name,
            original,
            1.0,
            down.shape[0],
            float(alpha),
            weight_decompose=True,
            wd_on_out=kind == "dora_out",
        )
        with torch.no_grad():
            module.lora_up.weight.copy_(up)
            module.lora_down.weight.copy_(down)
            module.dora_scale.copy_(scale)  # shape-checks the file's layout
        return module
    raise ValueError(kind)


def probe(target: wn.Target, generator: torch.Generator) -> torch.Tensor:
    """A random input for the layer: two token rows, or one 8x8 feature map."""
    if target.is_conv:
        return torch.randn(1, target.shape[1], 8, 8, generator=generator)
    return torch.randn(2, target.shape[1], generator=generator)


def lycoris_outputs(
    kind: str, path: Path, twin: dict[str, Any], weight: float
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per target: (input, pristine output, LyCORIS module's output at `weight`).

    The module's forward is the reference because it is what training ran: LyCORIS'
    `get_diff_weight` scales LoHa and LoKr deltas by alpha/rank twice (`get_weight` already
    applies it), which its forward does not.
    """
    tensors = load_file(str(path))
    generator = torch.Generator().manual_seed(3)
    outputs = {}
    with torch.no_grad():
        for target in SAMPLE_CONV:
            original = layer(twin, target)
            module = lycoris_module(kind, tensors, target, original).eval()
            module.multiplier = weight
            x = probe(target, generator)
            outputs[target.path] = (x, original(x), module(x))
    return outputs


def assert_outputs_match(
    sd15: dict[str, Any], reference: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> None:
    """Each patched layer's output equals the reference's, as a share of the adapter's effect."""
    errors = {}
    with torch.no_grad():
        for target in SAMPLE_CONV:
            x, pristine, expected = reference[target.path]
            errors[target.path] = relative_error(layer(sd15, target)(x), expected, pristine)
    bad = {path: error for path, error in errors.items() if error >= TOLERANCE}
    assert not bad, f"{len(bad)} of {len(errors)} layers differ: " + ", ".join(
        f"{path} ({error:.1e})" for path, error in list(bad.items())[:4]
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["locon", "loha", "lokr"])
def test_lycoris_families_patch_what_lycoris_modules_compute(
    sd15: dict[str, Any], twin: dict[str, Any], files: dict[str, Path], kind: str
) -> None:
    weight = 0.6
    reference = lycoris_outputs(kind, files[kind], twin, weight)
    with patched(sd15, files[kind], weight, weight):
        assert_outputs_match(sd15, reference)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dora", "dora_out"])
def test_dora_at_weight_one_equals_lycoris_module(
    sd15: dict[str, Any], twin: dict[str, Any], files: dict[str, Path], kind: str
) -> None:
    """Both sides DoRA files store magnitudes on: per input column (A1111/kohya) and per output
    row (LyCORIS' default)."""
    reference = lycoris_outputs(kind, files[kind], twin, 1.0)
    with patched(sd15, files[kind], 1.0, 1.0):
        assert_outputs_match(sd15, reference)


def a1111_dora(weight: torch.Tensor, delta: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """A1111 `NetworkModule.apply_weight_decompose`: W' = W + delta rescaled so that each input
    column's norm (over outputs and kernel) is the file's magnitude."""
    merged = weight + delta
    norm = (
        merged.transpose(0, 1)
        .reshape(merged.shape[1], -1)
        .norm(dim=1, keepdim=True)
        .reshape(merged.shape[1], *[1] * (merged.dim() - 1))
        .transpose(0, 1)
    )
    return merged * (scale / norm)


@pytest.mark.slow
def test_dora_at_partial_weight_scales_the_decomposed_change_as_a1111(
    sd15: dict[str, Any], twin: dict[str, Any], files: dict[str, Path]
) -> None:
    """A1111's `finalize_updown`: W + w * (DoRA(W + delta * alpha/rank) - W), so weight 0 is W.

    (LyCORIS' own `get_merged_weight(multiplier=w)` keeps the whole LoRA delta and scales only
    the rescaling; the two agree at weight 1, which the test above checks.)
    """
    tensors = load_file(str(files["dora"]))
    weight = 0.6
    pristine, expected = {}, {}
    for target in SAMPLE_CONV:
        name = wn.kohya_name(target)
        original = layer(twin, target).weight.detach()
        delta = kohya_delta(tensors, name, target.shape)
        decomposed = a1111_dora(original, delta, tensors[f"{name}.dora_scale"].float())
        pristine[target.path] = original
        expected[target.path] = original + weight * (decomposed - original)
    with patched(sd15, files["dora"], weight, weight):
        assert_matches(sd15, SAMPLE_CONV, expected, pristine)


# --- what the image sees --------------------------------------------------------------------


def fixed_inputs(tokenizer: Any) -> dict[str, torch.Tensor]:
    """Fixed tokens, a small (8x8) latent and a timestep for comparing outputs."""
    generator = torch.Generator().manual_seed(1)
    ids = tokenizer(
        "a photo of a dog", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    return {
        "ids": ids,
        "latents": torch.randn(1, 4, 8, 8, generator=generator),
        "timestep": torch.tensor(500),
    }


def outputs(
    sd15: dict[str, Any], inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-encoder hidden states and one UNet noise prediction."""
    with torch.no_grad():
        hidden = sd15["text_encoder"](inputs["ids"])[0]
        noise = sd15["unet"](
            inputs["latents"], inputs["timestep"], encoder_hidden_states=hidden
        ).sample
    return hidden, noise


def assert_pristine(sd15: dict[str, Any], twin: dict[str, Any]) -> None:
    for part in ("unet", "text_encoder"):
        ours = dict(sd15[part].named_parameters())
        for name, parameter in twin[part].named_parameters():
            assert torch.equal(ours[name], parameter), f"{part} {name} was not restored"


@pytest.mark.slow
def test_kohya_lora_changes_the_outputs_at_weight_one_and_restores_after(
    sd15: dict[str, Any],
    twin: dict[str, Any],
    files: dict[str, Path],
) -> None:
    hidden, noise = sd15["baseline"]
    with patched(sd15, files["kohya"], 1.0, 1.0):
        lora_hidden, lora_noise = outputs(sd15, sd15["inputs"])
    assert not torch.allclose(lora_hidden, hidden, atol=1e-4)
    assert not torch.allclose(lora_noise, noise, atol=1e-4)
    assert_pristine(sd15, twin)
    after_hidden, after_noise = outputs(sd15, sd15["inputs"])
    assert torch.equal(after_hidden, hidden) and torch.equal(after_noise, noise)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["kohya", "dora"])
def test_weight_zero_leaves_the_outputs_bit_identical(
    sd15: dict[str, Any],
    files: dict[str, Path],
    kind: str,
) -> None:
    hidden, noise = sd15["baseline"]
    with patched(sd15, files[kind], 0.0, 0.0):
        zero_hidden, zero_noise = outputs(sd15, sd15["inputs"])
    assert torch.equal(zero_hidden, hidden)
    assert torch.equal(zero_noise, noise)


# --- a bundled embedding --------------------------------------------------------------------


def test_bundled_embedding_is_loaded_with_its_token(files: dict[str, Path]) -> None:
    """Both spellings LyCORIS' pack_bundle writes: from a .pt embedding (`string_to_param.*`, with
    its int64 `string_to_token.*` beside it) and from a .safetensors one (`emb_params`)."""
    adapter = load_adapter(files["bundle"], model_width=wn.TEXT_WIDTH)
    stored = load_file(str(files["bundle"]))
    assert set(adapter.embeddings) == {"dreamtok", "sharpfocus"}
    for token, key, count in (
        ("dreamtok", "bundle_emb.dreamtok.string_to_param.*", 2),
        ("sharpfocus", "bundle_emb.sharpfocus.emb_params", 1),
    ):
        vectors = adapter.embeddings[token]
        assert vectors.dtype == torch.float32
        assert vectors.shape == (count, wn.TEXT_WIDTH)
        assert torch.equal(vectors, stored[key].float())


@pytest.mark.slow
def test_bundled_embedding_token_is_usable_in_a_prompt_while_the_lora_is_active(
    sd15: dict[str, Any], files: dict[str, Path]
) -> None:
    from pipeline.conditioning import VectorSlot, encode_chunks, split_into_chunks

    adapter = load_adapter(files["bundle"], model_width=wn.TEXT_WIDTH)
    tokenizer, text_encoder = sd15["tokenizer"], sd15["text_encoder"]
    pieces = [("a photo of dreamtok", 1.0)]
    with apply_loras(sd15["unet"], text_encoder, [(adapter, 1.0, 1.0)]):
        chunks, _ = split_into_chunks(pieces, tokenizer, adapter.embeddings)
        slots = [t for chunk in chunks for t in chunk.tokens if isinstance(t, VectorSlot)]
        assert [(s.name, s.index) for s in slots] == [("dreamtok", 0), ("dreamtok", 1)]
        with torch.no_grad():
            with_vectors = encode_chunks(chunks, text_encoder, tokenizer, 1, adapter.embeddings)
            plain_chunks, _ = split_into_chunks(pieces, tokenizer)
            plain = encode_chunks(plain_chunks, text_encoder, tokenizer, 1)
    assert not torch.allclose(with_vectors, plain)


# --- keys that match nothing ----------------------------------------------------------------


def test_a_few_stray_keys_are_skipped_and_counted(files: dict[str, Path]) -> None:
    inspection = inspect_file(files["stray"], wn.TEXT_WIDTH)
    assert inspection.ok, inspection.reason
    assert inspection.skipped == 3  # one stray module: lora_down, lora_up, alpha


@pytest.mark.slow
def test_the_rest_of_a_file_with_stray_keys_is_applied(
    sd15: dict[str, Any], twin: dict[str, Any], files: dict[str, Path]
) -> None:
    tensors = load_file(str(files["stray"]))
    pristine = {t.path: layer(twin, t).weight.detach() for t in STRAY_BASE}
    expected = {
        t.path: pristine[t.path] + kohya_delta(tensors, wn.kohya_name(t), t.shape)
        for t in STRAY_BASE
    }
    with patched(sd15, files["stray"], 1.0, 1.0):
        assert_matches(sd15, STRAY_BASE, expected, pristine)
    assert_pristine(sd15, twin)


def test_a_file_that_mostly_matches_nothing_is_refused_naming_the_modules(
    files: dict[str, Path],
) -> None:
    inspection = inspect_file(files["mostly_foreign"], wn.TEXT_WIDTH)
    assert inspection.ok is False
    assert inspection.reason is not None
    assert re.search(r"transformer_blocks[._][1-9]", inspection.reason), inspection.reason


# --- bad values refused at inspection -------------------------------------------------------

_GOOD = (
    wn.text_encoder_targets()[:1]
    + [t for t in wn.unet_attention_targets() if t.path.endswith("attn2.to_k")][:1]
)
_TE_NAME = wn.kohya_name(_GOOD[0])


def _spoiled(key: str, tensor: torch.Tensor) -> wn.Tensors:
    tensors = wn.kohya_lora(_GOOD, RANK, ALPHA, dtype=torch.float32)
    tensors[key] = tensor
    return tensors


BAD_VALUES = {
    "rank_zero": (
        f"{_TE_NAME}.lora_down.weight",
        torch.zeros(0, wn.TEXT_WIDTH),
    ),
    "alpha_not_scalar": (f"{_TE_NAME}.alpha", torch.full((4,), 2.0)),
    "int_factor": (
        f"{_TE_NAME}.lora_up.weight",
        torch.ones(wn.TEXT_WIDTH, RANK, dtype=torch.int32),
    ),
    "huge_factor": (
        f"{_TE_NAME}.lora_down.weight",
        torch.full((RANK, wn.TEXT_WIDTH), 0.01).index_fill_(1, torch.tensor([5]), 5e3),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused_naming_the_tensor(tmp_path: Path, case: str) -> None:
    key, tensor = BAD_VALUES[case]
    if case == "rank_zero":
        # A rank-0 module has both halves empty, as a broken resize would leave it.
        tensors = _spoiled(key, tensor)
        tensors[f"{_TE_NAME}.lora_up.weight"] = torch.zeros(wn.TEXT_WIDTH, 0)
    else:
        tensors = _spoiled(key, tensor)
    path = wn.write(tmp_path / f"{case}.safetensors", tensors)
    inspection = inspect_file(path, wn.TEXT_WIDTH)
    assert inspection.ok is False
    assert inspection.reason is not None and _TE_NAME in inspection.reason, inspection.reason
