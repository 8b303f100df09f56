"""What each kind of pickle becomes, checked with the loaders that will read it.

The child's conversion runs in-process here, on files the tests wrote themselves, so each layout
is checked without paying for a child process; `test_sandbox` covers the sandbox around it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pipeline.convert import child
from pipeline.convert.sandbox import Conversion, default_output
from pipeline.errors import UserError
from pipeline.lora.embeddings import load_embedding
from pipeline.lora.inspection import inspect_file
from pipeline.models import check_safetensors, load_vae
from pipeline.pixel_upscalers import load_rrdbnet
from pipeline.tiny import VAE_CONFIG, build_tiny_components
from tests.pipeline import ldm_checkpoint
from tests.pipeline.convert import pickles
from tests.pipeline.test_pixel_upscalers import basicsr_state, esrgan_state


def convert_here(source: Path, output: Path | None = None) -> Conversion:
    """What the child does to `source`, without the child process."""
    output = output or default_output(source)
    return Conversion(source, output, child.convert(source, output))


def test_a_diffusers_learned_embeds_keeps_its_token(tmp_path: Path) -> None:
    vector = pickles.diffusers_embedding(tmp_path / "learned_embeds.bin")
    done = convert_here(tmp_path / "learned_embeds.bin", tmp_path / "cat-toy.safetensors")
    loaded = load_embedding(done.output, 768)
    assert loaded.token == "<cat-toy>" and torch.equal(loaded.vectors, vector.reshape(1, -1))


def test_upscalers_in_both_layouts_load_as_the_same_network(tmp_path: Path) -> None:
    state = basicsr_state()
    torch.save({"params_ema": state}, tmp_path / "RealESRGAN_x4plus.pth")
    # 2018's ESRGAN releases predate torch's zip format.
    legacy = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(esrgan_state(state), legacy, _use_new_zipfile_serialization=False)
    for source, layout in ((tmp_path / "RealESRGAN_x4plus.pth", "BasicSR"), (legacy, "ESRGAN")):
        done = convert_here(source)
        assert done.kind == "upscaler" and done.report["layout"] == layout
        net = load_rrdbnet(done.output)
        for key, tensor in state.items():
            assert torch.equal(net.state_dict()[key], tensor), key


def test_a_hypernetwork_follows_the_agreed_layout(tmp_path: Path) -> None:
    saved = pickles.a1111_hypernetwork(tmp_path / "anime.pt")
    done = convert_here(tmp_path / "anime.pt")
    tensors = load_file(done.output)
    expected = {
        f"{width}.{index}.{key}": tensor
        for width in pickles.HYPERNETWORK_WIDTHS
        for index, state in enumerate(saved[width])
        for key, tensor in state.items()
    }
    assert "768.0.linear.0.weight" not in tensors and "320.1.linear.3.bias" in tensors
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[key], tensor) for key, tensor in expected.items())
    with safe_open(str(done.output), framework="pt") as file:
        metadata = file.metadata()
    assert metadata["format"] == "dreamcord-hypernetwork"
    assert metadata["layer_structure"] == "[1, 2, 1]"
    assert metadata["activation_func"] == '"swish"'
    assert metadata["is_layer_norm"] == "true"
    assert metadata["optional_info"] == "null"
    fields = {key for key in saved if isinstance(key, str)}
    assert metadata.keys() == fields | {"format"}
    assert all(json.loads(metadata[field]) == saved[field] for field in fields)
    assert done.report["widths"] == [320, 640]


def test_a_lightning_checkpoint_becomes_the_flat_ldm_state_dict(tmp_path: Path) -> None:
    state = ldm_checkpoint.ldm_state_dict(build_tiny_components())
    state["model.diffusion_model.out.2.bias"] = state["model.diffusion_model.out.2.weight"][
        :, 0, 0, 0
    ]
    pickles.lightning_checkpoint(tmp_path / "v1-5-tiny.ckpt", state)
    done = convert_here(tmp_path / "v1-5-tiny.ckpt")
    check_safetensors(done.output)
    written = load_file(done.output)
    assert written.keys() == state.keys()
    assert all(torch.equal(written[key], tensor) for key, tensor in state.items())
    ema = sum(1 for key in state if key.startswith("model.")) + 2
    assert done.report["dropped_ema"] == ema
    assert done.report["ignored_fields"] == ["epoch", "global_step"]


def test_a_vae_loses_its_training_entries_and_loads_as_the_vae_setting(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG)
    state = ldm_checkpoint.vae_to_ldm(vae)
    training = {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.ones(2)}
    torch.save({"state_dict": state | training, "global_step": 840000}, tmp_path / "vae-ft.ckpt")
    done = convert_here(tmp_path / "vae-ft.ckpt")
    assert done.kind == "vae" and done.report["dropped"] == 2
    vae.save_config(tmp_path / "configs" / "vae")
    loaded = load_vae(str(done.output), torch.float32, tmp_path / "configs")
    expected = vae.state_dict()
    assert all(torch.equal(loaded.state_dict()[key], expected[key]) for key in expected)


def test_loras_keep_their_names_dtypes_and_values(tmp_path: Path) -> None:
    kohya = pickles.kohya_lora_tensors()
    down = "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"
    saved = kohya | {down: kohya[down].t().contiguous().t()}  # a non-contiguous tensor
    torch.save(saved, tmp_path / "style.pt")
    torch.save(pickles.peft_lora_tensors(), tmp_path / "pytorch_lora_weights.bin")
    done = convert_here(tmp_path / "style.pt")
    assert done.kind == "lora" and done.report["dtypes"] == ["float16"]
    result = inspect_file(done.output)
    assert result.ok and result.kind == "lora" and result.base == "sd1" and result.rank == 4
    written = load_file(done.output)
    assert all(torch.equal(written[key], tensor) for key, tensor in kohya.items())
    assert inspect_file(convert_here(tmp_path / "pytorch_lora_weights.bin").output).ok


def test_shared_tensors_are_written_as_copies(tmp_path: Path) -> None:
    weight = torch.randn(4, 768)
    tied = {"lora_unet_a_b.lora_down.weight": weight, "lora_unet_a_b.lora_up.weight": weight[:2]}
    torch.save(tied, tmp_path / "tied.pt")
    written = load_file(convert_here(tmp_path / "tied.pt").output)
    assert torch.equal(written["lora_unet_a_b.lora_up.weight"], weight[:2])


def test_objects_other_than_tensors_and_containers_are_refused(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(2), "dtype": torch.float16}, tmp_path / "dtype.pt")
    with pytest.raises(UserError, match=r"dtype.pt holds a dtype, not plain data"):
        convert_here(tmp_path / "dtype.pt")


def test_an_unknown_layout_names_its_top_level_keys(tmp_path: Path) -> None:
    torch.save({"optimizer": {"lr": 0.1}, "net": torch.zeros(2, 2)}, tmp_path / "what.pt")
    with pytest.raises(UserError, match=r"top-level keys: 'optimizer', 'net'"):
        convert_here(tmp_path / "what.pt")


def test_a_converted_a1111_hypernetwork_is_accepted_by_the_hypernetwork_library_check(
    tmp_path: Path,
) -> None:
    """The two sides of the agreed layout meet: convert writes it, inspection reads it."""
    from pipeline.lora.inspection import inspect_file

    pickles.a1111_hypernetwork(tmp_path / "anime.pt")
    done = convert_here(tmp_path / "anime.pt")
    result = inspect_file(done.output)
    assert result.ok, result.reason
    assert result.kind == "hypernetwork" and result.hypernet is not None
    assert result.hypernet.activation == "swish" and result.hypernet.layer_norm
    assert sorted(result.hypernet.widths) == sorted(pickles.HYPERNETWORK_WIDTHS)
