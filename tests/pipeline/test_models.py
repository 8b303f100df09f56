"""Model sources and the SD1.5 configs shipped for offline checkpoint loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.errors import UserError
from pipeline.models import ModelKind, config_dir, resolve_model


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
