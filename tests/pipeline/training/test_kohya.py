"""The exported file is what sd-scripts writes, and other loaders read it as the run trained it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from bot.cli import lora
from bot.settings import load_settings
from pipeline.errors import UserError
from pipeline.prompt.parse import parse_prompt
from pipeline.tiny import build_tiny_components
from pipeline.training.trainer import Trainer
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine
from tests.pipeline.lora.make_files import text_targets, unet_targets


@pytest.fixture(scope="module")
def exported(trained: Trainer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.export(tmp_path_factory.mktemp("export") / "fox.safetensors")


def _sd_scripts_names() -> set[str]:
    """The module names sd-scripts' networks/lora.py gives SD1.5's targets, built here from its
    rule: prefix, the module path with dots as underscores, the text encoder in transformers 4's
    layout (`text_model.encoder...`) whatever transformers is installed."""
    parts = build_tiny_components()
    unet_layers = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    unet = {
        "lora_unet_" + path.replace(".", "_")
        for path, _ in unet_targets(parts["unet"])
        if path.endswith(unet_layers)
    }
    text = {"lora_te_" + path.replace(".", "_") for path, _ in text_targets(parts["text_encoder"])}
    assert all(name.startswith("lora_te_text_model_encoder_layers_") for name in text)
    return unet | text


def test_the_names_and_metadata_are_sd_scripts(exported: Path, trained: Trainer) -> None:
    with safe_open(str(exported), "pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
        alpha = handle.get_tensor("lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha")
    expected = _sd_scripts_names()
    suffixes = (".lora_down.weight", ".lora_up.weight", ".alpha")
    assert keys == {name + suffix for name in expected for suffix in suffixes}
    assert float(alpha) == 2.0  # alpha / rank = 0.5: a loader that ignored it would differ
    assert metadata["ss_network_module"] == "networks.lora"
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("4", "2.0")
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["ss_sd_model_name"] == "tiny"
    assert metadata["ss_resolution"] == "(256, 256)"
    assert metadata["ss_output_name"] == "fox"
    assert (metadata["ss_steps"], metadata["ss_epoch"]) == ("12", "1")
    assert metadata["ss_num_train_images"] == "16"  # 8 pictures x 2 repeats, as sd-scripts counts
    assert (metadata["ss_unet_lr"], metadata["ss_text_encoder_lr"]) == ("0.003", "0.001")
    # sd-scripts: {dataset folder: {tag: count}} as a JSON string; the trigger leads each caption.
    tags = json.loads(metadata["ss_tag_frequency"])
    assert tags == {"2_fox": {"fox": 8, "snow": 4, "grass": 4, "photo": 8}}
    assert json.loads(metadata["ss_dataset_dirs"]) == {"2_fox": {"n_repeats": 2, "img_count": 8}}


def test_the_file_passes_lora_check_with_both_components(exported: Path, capsys) -> None:
    settings = load_settings(None, model="tiny")
    parser = argparse.ArgumentParser()
    lora.register(parser.add_subparsers())
    args = parser.parse_args(["lora", "check", str(exported), "--json"])
    assert args.handler(args, settings) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["kind"] == "lora" and report["skipped"] == 0
    assert report["modules"] == len(_sd_scripts_names()) and report["rank"] == 4
    assert report["triggers"][0] == "fox"


def _layer_outputs(unet, text_encoder, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's hidden states and one UNet prediction on fixed inputs."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 49406, (1, 77), generator=generator)
    latents = torch.randn(1, 4, 32, 32, generator=generator)
    with torch.no_grad():
        hidden = text_encoder(ids)[0]
        noise = unet(latents, torch.tensor([500]), encoder_hidden_states=hidden).sample
    return hidden, noise


def test_diffusers_load_lora_weights_gives_the_trained_outputs(
    exported: Path, trained: Trainer
) -> None:
    from diffusers import StableDiffusionPipeline

    parts = build_tiny_components()
    base = _layer_outputs(parts["unet"], parts["text_encoder"])
    pipe = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(str(exported))
    loaded = _layer_outputs(pipe.unet, pipe.text_encoder)
    trained.unet.eval()
    trained.text_encoder.eval()
    ours = _layer_outputs(trained.unet, trained.text_encoder)
    for mine, theirs, before in zip(ours, loaded, base, strict=True):
        change = (mine - before).abs().mean()
        assert change > 1e-4  # the adapters do something...
        # ...and diffusers' loader does the same (the file is fp16, as sd-scripts saves it).
        assert (theirs - mine).abs().mean() < 0.02 * change


def test_the_lora_changes_the_image_of_a_prompt_through_the_engine(exported: Path) -> None:
    from pipeline.lora.adapter import file_sha256
    from pipeline.lora.cache import AdapterCache
    from pipeline.lora.source import AdapterSource

    class OneLora:
        def names(self) -> list[str]:
            return ["fox"]

        def resolve(self, name: str) -> tuple[Path, str]:
            if name != "fox":
                raise UserError(f"no LoRA {name!r}")
            return exported, file_sha256(exported)

    class NoFiles(OneLora):
        def names(self) -> list[str]:
            return []

    engine = tiny_engine()
    engine.adapters = AdapterSource(OneLora(), NoFiles(), AdapterCache(64 * 1024**2))
    parsed = parse_prompt("a red fox in the snow <lora:fox:1>", known_loras=["fox"])
    assert parsed.ok and parsed.prompt.strip() == SMALL.prompt
    plain = pixels(run(engine, SMALL)[0])
    with_lora = pixels(run(engine, SMALL, loras=parsed.loras)[0])
    assert np.abs(with_lora - plain).mean() > 0.5
    assert np.array_equal(pixels(run(engine, SMALL)[0]), plain)  # removed after the batch
