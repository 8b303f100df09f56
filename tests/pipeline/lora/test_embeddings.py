"""Embeddings load from both layouts, refuse what cannot work, and get usable names."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import UserError
from pipeline.lora.embeddings import check_embedding_name, load_embedding
from pipeline.tiny import TINY_WIDTH
from tests.pipeline.lora import make_files as mf


def test_a1111_layout_loads_vectors_without_a_token(tmp_path):
    embedding = load_embedding(
        mf.write_embedding(tmp_path / "e.safetensors", TINY_WIDTH, 3), TINY_WIDTH
    )
    assert embedding.vectors.shape == (3, TINY_WIDTH)
    assert embedding.vectors.dtype == torch.float32
    assert embedding.token is None


def test_diffusers_layout_loads_a_single_vector_and_its_token(tmp_path):
    path = mf.write(tmp_path / "d.safetensors", {"<cat-toy>": torch.ones(TINY_WIDTH)})
    embedding = load_embedding(path, TINY_WIDTH)
    assert embedding.vectors.shape == (1, TINY_WIDTH)
    assert embedding.token == "<cat-toy>"


def test_wrong_width_is_refused(tmp_path):
    with pytest.raises(UserError, match="width 768"):
        load_embedding(mf.write_embedding(tmp_path / "e.safetensors", 768, 2), TINY_WIDTH)


def test_nan_vectors_are_refused(tmp_path):
    path = mf.write(
        tmp_path / "n.safetensors", {"emb_params": torch.full((2, TINY_WIDTH), float("nan"))}
    )
    with pytest.raises(UserError, match="NaN"):
        load_embedding(path, TINY_WIDTH)


def test_a_lora_is_not_an_embedding(tiny_files):
    with pytest.raises(UserError, match="not a textual-inversion"):
        load_embedding(tiny_files["lora"], TINY_WIDTH)


def test_distinctive_names_are_accepted(tiny):
    for name in ("EasyNegative", "bad-hands-5", "my_style.v2"):
        check_embedding_name(name, tiny["tokenizer"])


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("cat", "single word"),
        ("bad name", "cannot name"),
        ("a(b)", "cannot name"),
        ("", "cannot name"),
    ],
)
def test_names_that_hide_a_word_or_break_prompts_are_refused(tiny, name, words):
    with pytest.raises(UserError, match=words):
        check_embedding_name(name, tiny["tokenizer"])
