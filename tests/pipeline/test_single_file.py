"""Single-file checkpoints in the original LDM layout, loaded offline, on the tiny model.

`ldm_checkpoint` writes the tiny model the way Civitai files store SD1.5, and a config folder
for its architecture; loading it must give back the tiny model bit for bit, draw the same
pixels, stamp the file's hash, take a separate VAE file, and refuse broken files clearly.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.engine import Engine
from pipeline.errors import UserError
from pipeline.infotext import parse_parameters
from pipeline.models import (
    ModelKind,
    ModelManager,
    ModelSource,
    choose_placement,
    config_dir,
    load_model,
    resolve_model,
)
from pipeline.png import png_bytes, read_png
from pipeline.tiny import VAE_CONFIG, build_tiny_components
from tests.pipeline import ldm_checkpoint
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine

PARTS = ("unet", "vae", "text_encoder")


@dataclass(frozen=True)
class Files:
    checkpoint: Path
    configs: Path


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    return build_tiny_components()


@pytest.fixture(scope="module")
def files(tiny: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("single_file")
    return Files(
        ldm_checkpoint.write_checkpoint(folder / "tiny-ldm.safetensors", tiny),
        ldm_checkpoint.write_configs(folder / "configs", tiny),
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during an offline load: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def assert_same_weights(module: torch.nn.Module, expected: torch.nn.Module) -> None:
    got, want = module.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


def public(config: Any) -> dict[str, Any]:
    """A config without diffusers' bookkeeping entries (`_class_name`, `_use_default_values`)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def sha256_10(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def test_the_fixture_is_in_ldm_layout(files: Files) -> None:
    from safetensors import safe_open

    with safe_open(str(files.checkpoint), framework="pt") as handle:
        keys = set(handle.keys())
        q = handle.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight")
    assert {
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.3.2.conv.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.0.block.0.conv1.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.decoder.norm_out.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "alphas_cumprod",
    } <= keys
    assert not [key for key in keys if "down_blocks" in key or "resnets" in key]
    assert q.shape == (32, 32, 1, 1)


def test_diffusers_converts_the_fixture_back_exactly(tiny: dict[str, Any]) -> None:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    state = ldm_checkpoint.ldm_state_dict(tiny)
    unet = convert_ldm_unet_checkpoint(state, tiny["unet"].config)
    vae = convert_ldm_vae_checkpoint(state, tiny["vae"].config)
    clip = convert_ldm_clip_checkpoint(state)
    clip = {key.removeprefix("text_model."): tensor for key, tensor in clip.items()}
    clip.pop("embeddings.position_ids")  # a buffer SD1.5 files carry; not a weight here
    for converted, part in ((unet, "unet"), (vae, "vae"), (clip, "text_encoder")):
        original = tiny[part].state_dict()
        assert converted.keys() == original.keys(), part
        assert all(torch.equal(converted[key], original[key]) for key in original), part


def test_vae_resnets_with_shortcuts_convert_back_exactly() -> None:
    """The tiny VAE keeps one width; real ones change width and need `nin_shortcut`."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = {
        **VAE_CONFIG,
        "block_out_channels": (32, 64),
        "down_block_types": VAE_CONFIG["down_block_types"][:2],
        "up_block_types": VAE_CONFIG["up_block_types"][:2],
        "layers_per_block": 2,
    }
    vae = AutoencoderKL(**config)
    state = ldm_checkpoint.vae_to_ldm(vae)
    assert "encoder.down.1.block.0.nin_shortcut.weight" in state
    assert "decoder.up.0.block.0.nin_shortcut.weight" in state
    back = convert_ldm_vae_checkpoint(state, vae.config)
    assert back.keys() == vae.state_dict().keys()
    assert all(torch.equal(back[key], tensor) for key, tensor in vae.state_dict().items())


def test_a_checkpoint_loads_offline_bit_for_bit(
    files: Files, tiny: dict[str, Any], no_network: None
) -> None:
    source = resolve_model(str(files.checkpoint))
    assert (source.kind, source.name) == (ModelKind.SINGLE_FILE, "tiny-ldm")
    model = load_model(source, choose_placement("cpu"), configs=files.configs)
    for part in PARTS:
        assert_same_weights(getattr(model.pipe, part), tiny[part])
    assert type(model.pipe.scheduler) is type(tiny["scheduler"])
    assert public(model.pipe.scheduler.config) == public(tiny["scheduler"].config)
    assert model.pipe.tokenizer("a fox").input_ids == tiny["tokenizer"]("a fox").input_ids
    assert model.hash == sha256_10(files.checkpoint)


def test_the_engine_draws_the_same_pixels_from_the_file_as_from_tiny(files: Files) -> None:
    source = replace(resolve_model(str(files.checkpoint)), configs=files.configs)
    engine = Engine(ModelManager({source.name: source}, source.name, choose_placement("cpu")))
    from_file = run(engine, SMALL)[0]
    from_tiny = run(tiny_engine(), SMALL)[0]
    assert np.array_equal(pixels(from_file), pixels(from_tiny))

    image, text = read_png(_write_png(files.checkpoint.parent / "out.png", from_file))
    _, _, fields = parse_parameters(text or "")
    assert fields["Model hash"] == sha256_10(files.checkpoint)
    assert fields["Model"] == "tiny-ldm"
    assert np.array_equal(np.asarray(image), np.asarray(from_file.image))


def _write_png(path: Path, result: Any) -> Path:
    path.write_bytes(png_bytes(result.image, result.parameters))
    return path


@pytest.mark.parametrize("prefix", ["first_stage_model.", ""], ids=["cut-out", "ft-mse-style"])
def test_a_separate_vae_file_replaces_the_checkpoint_vae(
    files: Files, tiny: dict[str, Any], prefix: str, tmp_path: Path
) -> None:
    other = build_tiny_components(seed=1)["vae"]
    vae_file = ldm_checkpoint.write_vae(tmp_path / "vae.safetensors", other, prefix)
    source = resolve_model(str(files.checkpoint))
    model = load_model(source, choose_placement("cpu"), vae=str(vae_file), configs=files.configs)
    assert_same_weights(model.pipe.vae, other)
    assert_same_weights(model.pipe.unet, tiny["unet"])
    assert model.hash == sha256_10(files.checkpoint)  # the hash is the checkpoint's, as in A1111


def test_parameters_name_a_separate_vae_as_a1111_does(files: Files, tmp_path: Path) -> None:
    vae_file = ldm_checkpoint.write_vae(
        tmp_path / "vae-ft-mse.safetensors", build_tiny_components(seed=1)["vae"], ""
    )
    source = replace(resolve_model(str(files.checkpoint)), configs=files.configs)

    def fields_with(vae: str | None) -> dict[str, str]:
        models = ModelManager({source.name: source}, source.name, choose_placement("cpu"), vae=vae)
        return parse_parameters(run(Engine(models), SMALL)[0].parameters)[2]

    with_vae = fields_with(str(vae_file))
    # A1111: `VAE hash` is the first 10 hex digits of the file's SHA-256, `VAE` its file name.
    assert with_vae["VAE hash"] == sha256_10(vae_file)
    assert with_vae["VAE"] == "vae-ft-mse.safetensors"
    assert list(with_vae).index("VAE") == list(with_vae).index("Model") + 2
    assert not {"VAE", "VAE hash"} & set(fields_with(None))  # the checkpoint's own VAE


def test_a_checkpoint_without_a_vae_needs_a_vae_file(
    files: Files, tiny: dict[str, Any], tmp_path: Path
) -> None:
    bare = ldm_checkpoint.write_checkpoint(tmp_path / "no-vae.safetensors", tiny, vae=False)
    source = replace(resolve_model(str(bare)), configs=files.configs)
    with pytest.raises(UserError, match="has no VAE weights: set VAE to a separate"):
        load_model(source, choose_placement("cpu"))
    vae_file = ldm_checkpoint.write_vae(tmp_path / "vae.safetensors", tiny["vae"], "")
    model = load_model(source, choose_placement("cpu"), vae=str(vae_file))
    assert_same_weights(model.pipe.vae, tiny["vae"])


def _truncated(files: Files, tmp_path: Path) -> Path:
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(files.checkpoint.read_bytes()[:-4096])
    return path


def _missing_text_weight(files: Files, tmp_path: Path) -> Path:
    from safetensors.torch import load_file

    state = load_file(str(files.checkpoint))
    del state["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    return ldm_checkpoint.save(state, tmp_path / "incomplete.safetensors")


def _vae_only(files: Files, tmp_path: Path) -> Path:
    vae = build_tiny_components()["vae"]
    return ldm_checkpoint.write_vae(tmp_path / "vae-only.safetensors", vae)


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        (_truncated, "Unable to load weights"),
        (_missing_text_weight, "some text_encoder weights are missing"),
        (_vae_only, "Failed to load CLIPTextModel"),
    ],
    ids=["truncated", "incomplete", "vae-only"],
)
def test_broken_checkpoints_are_refused_with_the_reason(
    files: Files, tmp_path: Path, broken: Any, says: str
) -> None:
    path = broken(files, tmp_path)
    # built by hand: resolve_model would already refuse the truncated file (tested below)
    source = ModelSource(path.stem, str(path), ModelKind.SINGLE_FILE, path, files.configs)
    with pytest.raises(UserError, match=r"MODEL must be a complete Stable Diffusion 1\.5") as error:
        load_model(source, choose_placement("cpu"))
    assert says in str(error.value)
    assert "from_single_file" not in str(error.value)  # diffusers' advice to programmers


def test_a_truncated_checkpoint_is_refused_before_loading(files: Files, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="truncated or corrupt, so download it again"):
        resolve_model(str(_truncated(files, tmp_path)))


def test_a_checkpoint_of_another_architecture_is_refused(files: Files) -> None:
    """The tiny file against the shipped full-size SD1.5 configs: shapes differ."""
    with pytest.raises(UserError, match=r"expected shape .* but got .*MODEL must be") as error:
        load_model(resolve_model(str(files.checkpoint)), choose_placement("cpu"))
    assert "low_cpu_mem_usage" not in str(error.value)


def test_a_file_without_vae_weights_is_refused_as_a_vae(files: Files, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_conv_in.lora_down.weight": torch.zeros(4, 4)}, str(lora))
    with pytest.raises(UserError, match=r"could not load VAE .*unset VAE"):
        load_model(
            resolve_model(str(files.checkpoint)),
            choose_placement("cpu"),
            vae=str(lora),
            configs=files.configs,
        )


@pytest.fixture(scope="module")
def inpainting_parts(tiny: dict[str, Any]) -> dict[str, Any]:
    return ldm_checkpoint.with_inpainting_unet(tiny)


@pytest.fixture(scope="module")
def inpainting_file(
    inpainting_parts: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("inpainting")
    return ldm_checkpoint.write_checkpoint(folder / "tiny-inpainting.safetensors", inpainting_parts)


def test_an_inpainting_checkpoint_is_recognised_as_diffusers_does(
    inpainting_file: Path, files: Files
) -> None:
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors.torch import load_file

    state = load_file(str(inpainting_file))
    assert state["model.diffusion_model.input_blocks.0.0.weight"].shape == (32, 9, 3, 3)
    assert infer_diffusers_model_type(state) == "inpainting"
    assert infer_diffusers_model_type(load_file(str(files.checkpoint))) == "v1"

    source = resolve_model(str(inpainting_file))
    assert (source.kind, source.unet_in_channels, source.inpainting) == (
        ModelKind.SINGLE_FILE,
        9,
        True,
    )
    assert source.description == "SD1.5 inpainting checkpoint file (9 input channels)"
    assert source.configs == config_dir("sd15-inpainting")
    normal = resolve_model(str(files.checkpoint))
    assert (normal.unet_in_channels, normal.inpainting, normal.description) == (
        4,
        False,
        "checkpoint file",
    )


def test_an_inpainting_checkpoint_loads_offline_and_refuses_a_job_without_a_mask(
    inpainting_parts: dict[str, Any], inpainting_file: Path, tmp_path: Path, no_network: None
) -> None:
    parts = inpainting_parts
    configs = ldm_checkpoint.write_configs(tmp_path / "configs", parts)
    source = replace(resolve_model(str(inpainting_file)), configs=configs)
    model = load_model(source, choose_placement("cpu"))
    assert model.pipe.unet.config.in_channels == 9
    for name, tensor in parts["unet"].state_dict().items():
        assert torch.equal(model.pipe.unet.state_dict()[name], tensor), name
    manager = ModelManager({source.name: source}, source.name, choose_placement("cpu"))
    says = (
        r"tiny-inpainting is an SD1\.5 inpainting checkpoint \(9 input channels\); it serves "
        r"image edits \(a mask or a grown canvas\); pick a normal checkpoint for /imagine"
    )
    with pytest.raises(UserError, match=says):
        run(Engine(manager), replace(SMALL, model=source.name))
