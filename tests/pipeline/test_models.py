"""Model sources and the SD1.5 configs shipped for offline checkpoint loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from pipeline.models import ModelKind, checkpoint_unet_in_channels, config_dir, resolve_model


def test_shipped_configs_describe_full_size_sd15() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = config_dir()

    def read(part: str) -> dict:
        return json.loads((configs / part / "config.json").read_text())

    with torch.device("meta"):
        counts = {
            "unet": UNet2DConditionModel.from_config(read("unet")),
            "vae": AutoencoderKL.from_config(read("vae")),
            "text": CLIPTextModel(CLIPTextConfig(**read("text_encoder"))),
        }
    millions = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in counts.items()}
    assert 859 < millions["unet"] < 861
    assert 83 < millions["vae"] < 84
    assert 123 < millions["text"] < 124


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("tiny", ModelKind.TINY),
        ("sd15-random", ModelKind.RANDOM_SD15),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", ModelKind.HUB),
    ],
)
def test_builtin_names_and_hub_ids(spec: str, kind: ModelKind) -> None:
    assert resolve_model(spec).kind is kind


def test_a_diffusers_folder_needs_model_index(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"without model_index\.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{}")
    source = resolve_model(str(tmp_path))
    assert (source.kind, source.name) == (ModelKind.FOLDER, tmp_path.name)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickles_are_refused_with_the_reason(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not loaded")
    with pytest.raises(UserError, match="pickles that can run code"):
        resolve_model(str(path))


def test_a_checkpoint_file_is_checked_before_loading(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good = tmp_path / "dreamshaper.safetensors"
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(good))
    assert resolve_model(str(good)).name == "dreamshaper"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        resolve_model(str(truncated))


def test_shipped_inpainting_configs_differ_from_sd15_only_where_inpainting_does() -> None:
    """stable-diffusion-v1-5/stable-diffusion-inpainting: a 9-channel conv_in, its own pipeline."""
    from diffusers import UNet2DConditionModel

    sd15, inpainting = config_dir(), config_dir("sd15-inpainting")
    files = sorted(path.relative_to(sd15) for path in sd15.rglob("*.json"))
    assert files == sorted(path.relative_to(inpainting) for path in inpainting.rglob("*.json"))
    for name in files:
        plain = json.loads((sd15 / name).read_text())
        wide = json.loads((inpainting / name).read_text())
        if name == Path("unet/config.json"):
            assert (plain.pop("in_channels"), wide.pop("in_channels")) == (4, 9)
        elif name == Path("model_index.json"):
            assert wide.pop("_class_name") == "StableDiffusionInpaintPipeline"
            plain.pop("_class_name")
        assert plain == wide, name
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            json.loads((inpainting / "unet" / "config.json").read_text())
        )
    assert unet.conv_in.weight.shape == (320, 9, 3, 3)


def _header_only_checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    from safetensors.torch import save_file

    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    return path


CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
TO_K = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
SDXL_CLIP_G = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"


@pytest.mark.parametrize(
    ("shapes", "channels"),
    [
        ({CONV_IN: (320, 9, 3, 3), TO_K: (320, 768)}, 9),  # sd-v1-5-inpainting
        ({CONV_IN: (320, 4, 3, 3), TO_K: (320, 768)}, 4),  # SD1.5
        ({CONV_IN: (320, 9, 3, 3), TO_K: (320, 1024)}, None),  # SD2 inpainting
        ({CONV_IN: (320, 9, 3, 3), SDXL_CLIP_G: (1280,)}, None),  # SDXL inpainting
    ],
    ids=["sd15-inpainting", "sd15", "sd2-inpainting", "sdxl-inpainting"],
)
def test_only_sd15_checkpoints_report_their_unet_input_channels(
    tmp_path: Path, shapes: dict[str, tuple[int, ...]], channels: int | None
) -> None:
    path = _header_only_checkpoint(tmp_path / "model.safetensors", shapes)
    assert checkpoint_unet_in_channels(path) == channels
    assert resolve_model(str(path)).inpainting is (channels == 9)


def test_a_diffusers_inpainting_folder_is_recognised(tmp_path: Path) -> None:
    shutil.copytree(config_dir("sd15-inpainting"), tmp_path / "sd-inpainting")
    source = resolve_model(str(tmp_path / "sd-inpainting"))
    assert source.inpainting
    assert source.description == "SD1.5 inpainting diffusers folder (9 input channels)"
    with pytest.raises(UserError, match=r"sd-inpainting is an SD1\.5 inpainting checkpoint"):
        source.require_txt2img()
    shutil.copytree(config_dir(), tmp_path / "sd")
    assert not resolve_model(str(tmp_path / "sd")).inpainting
