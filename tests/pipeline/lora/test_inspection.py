"""Inspection tells what a file is and refuses what Dreamcord cannot or must not use."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from pipeline.lora.inspection import inspect_file
from pipeline.tiny import TINY_WIDTH
from tests.pipeline.lora import make_files as mf
from tests.pipeline.lora.conftest import TINY_ALPHA, TINY_RANK

KINDS = {
    "lora": "lora",
    "lora_no_alpha": "lora",
    "locon": "locon",
    "locon_mid": "locon",
    "loha": "loha",
    "loha_tucker": "loha",
    "lokr": "lokr",
    "lokr_tucker": "lokr",
    "peft": "lora",
    "diffusers_2023": "lora",
}


@pytest.mark.parametrize("name", list(KINDS))
def test_tiny_files_of_each_kind_pass_for_the_tiny_model(tiny_files, name):
    result = inspect_file(tiny_files[name], model_width=TINY_WIDTH)
    assert result.ok, result.reason
    assert (result.kind, result.base) == (KINDS[name], "sd1")
    assert result.modules > 0
    assert result.tensors > result.modules
    assert result.size == tiny_files[name].stat().st_size


def test_lora_report_gives_rank_alpha_triggers_and_metadata(tiny_files):
    result = inspect_file(tiny_files["lora"], model_width=TINY_WIDTH)
    assert (result.rank, result.alpha) == (TINY_RANK, TINY_ALPHA)
    assert result.triggers == ("sks dog", "grass", "outdoors")
    assert result.metadata["ss_output_name"] == "test-subject"
    assert result.metadata["ss_base_model_version"] == "sd_v1"
    assert inspect_file(tiny_files["lora_no_alpha"], model_width=TINY_WIDTH).alpha is None


def test_tiny_file_is_refused_for_real_sd15_by_its_width(tiny_files):
    result = inspect_file(tiny_files["lora"])
    assert not result.ok
    assert "text width 32" in result.reason and "768" in result.reason


@pytest.mark.parametrize("name", ["lora", "locon", "loha", "lokr", "peft"])
def test_full_size_sd15_files_of_each_kind_pass(full_files, name):
    result = inspect_file(full_files[name])
    assert result.ok, result.reason
    assert result.base == "sd1"
    assert result.rank == 1


@pytest.mark.parametrize(("name", "label"), [("sd2", "SD2.x"), ("sdxl", "SDXL")])
def test_sd2_and_sdxl_files_are_refused_naming_their_base(full_files, name, label):
    result = inspect_file(full_files[name])
    assert (result.ok, result.base) == (False, name)
    assert label in result.reason


@pytest.mark.parametrize(
    ("writer", "words"),
    [
        (mf.write_pickle, "pickle"),
        (mf.write_zip, "zip"),
        (mf.write_png, "PNG"),
    ],
)
def test_renamed_files_are_refused_by_their_content(tmp_path, writer, words):
    result = inspect_file(writer(tmp_path / "model.safetensors"))
    assert not result.ok
    assert words in result.reason and "renamed" in result.reason


def test_pickle_suffix_is_refused_without_reading(tmp_path):
    path = mf.write_pickle(tmp_path / "model.ckpt")
    result = inspect_file(path)
    assert not result.ok and "only .safetensors" in result.reason


def test_truncated_file_is_refused(tiny_files, tmp_path):
    result = inspect_file(mf.truncate(tiny_files["lora"], tmp_path / "cut.safetensors"))
    assert not result.ok and "truncated" in result.reason


def test_absurd_header_length_is_refused_before_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    result = inspect_file(path)
    assert not result.ok and "header length" in result.reason


def test_header_offsets_past_the_data_are_refused(tmp_path):
    header = json.dumps({"x.alpha": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(4))
    result = inspect_file(path)
    assert not result.ok and "truncated" in result.reason


def _tiny_lora(tiny, **overrides) -> dict[str, torch.Tensor]:
    tensors = mf.kohya_tensors(
        mf.unet_targets(tiny["unet"]), mf.text_targets(tiny["text_encoder"]), mf.lora_parts, 2, 1
    )
    return tensors | overrides


def test_nan_values_are_refused(tiny, tmp_path):
    tensors = _tiny_lora(tiny)
    name = next(key for key in tensors if key.endswith("lora_up.weight"))
    tensors[name][0, 0] = float("nan")
    result = inspect_file(mf.write(tmp_path / "nan.safetensors", tensors), TINY_WIDTH)
    assert not result.ok and "NaN" in result.reason and name in result.reason


def test_missing_up_half_is_refused_naming_the_module(tiny, tmp_path):
    tensors = _tiny_lora(tiny)
    name = next(key for key in tensors if key.endswith("attn1_to_q.lora_up.weight"))
    del tensors[name]
    result = inspect_file(mf.write(tmp_path / "half.safetensors", tensors), TINY_WIDTH)
    assert not result.ok
    assert "lacks lora_up" in result.reason and "attn1_to_q" in result.reason


def test_unknown_key_family_is_refused(tmp_path):
    tensors = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}
    result = inspect_file(mf.write(tmp_path / "ckpt.safetensors", tensors))
    assert not result.ok and "no known layout" in result.reason


def test_old_ldm_unet_names_are_matched_to_the_model(tmp_path):
    parts = mf.lora_parts(torch.Size((320, 768)), 1, torch.Generator())
    tensors = {
        f"lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k.{p}": t
        for p, t in parts.items()
    }
    result = inspect_file(mf.write(tmp_path / "old.safetensors", tensors))
    assert result.ok, result.reason
    assert (result.modules, result.skipped) == (1, 0)


def test_empty_file_is_refused(tmp_path):
    result = inspect_file(mf.write(tmp_path / "empty.safetensors", {}))
    assert not result.ok and "no tensors" in result.reason


def test_factors_that_do_not_chain_are_refused(tmp_path):
    tensors = {
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 8),
    }
    result = inspect_file(mf.write(tmp_path / "bad.safetensors", tensors))
    assert not result.ok and "do not fit together" in result.reason


@pytest.mark.parametrize("token", [None, "<tiny-token>"])
def test_embeddings_of_both_layouts_pass(tmp_path, token):
    path = mf.write_embedding(tmp_path / "emb.safetensors", TINY_WIDTH, 3, token=token)
    result = inspect_file(path, TINY_WIDTH)
    assert result.ok, result.reason
    assert (result.kind, result.base, result.vectors) == ("embedding", "sd1", 3)


def test_embedding_of_another_width_or_too_long_is_refused(tmp_path):
    wide = inspect_file(mf.write_embedding(tmp_path / "w.safetensors", 1024, 2))
    assert (wide.ok, wide.base) == (False, "sd2") and "width 1024" in wide.reason
    long = inspect_file(mf.write_embedding(tmp_path / "l.safetensors", 768, 80))
    assert not long.ok and "80 vectors" in long.reason


def test_sdxl_embedding_is_refused(tmp_path):
    tensors = {"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(2, 1280)}
    result = inspect_file(mf.write(tmp_path / "xl.safetensors", tensors))
    assert (result.ok, result.base) == (False, "sdxl")


def test_inspection_never_touches_pickle_loading(tmp_path, monkeypatch):
    import pickle

    def refuse(*_args, **_kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    for writer in (mf.write_pickle, mf.write_zip):
        assert not inspect_file(writer(tmp_path / f"{writer.__name__}.safetensors")).ok


def test_inspection_result_is_frozen(tiny_files):
    result = inspect_file(tiny_files["lora"], TINY_WIDTH)
    with pytest.raises(AttributeError):
        result.ok = False  # type: ignore[misc]


def test_as_json_has_the_cli_fields(tiny_files):
    document = inspect_file(tiny_files["lora"], TINY_WIDTH).as_json()
    assert {"ok", "kind", "base", "rank", "modules", "size", "triggers", "reason"} <= set(document)
    json.dumps(document)


def test_a_deeply_nested_header_is_refused_not_raised(tmp_path):
    header = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "nested.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    result = inspect_file(path)
    assert not result.ok and "nested too deeply" in result.reason
