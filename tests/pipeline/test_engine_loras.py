"""LoRAs and embeddings in the engine: they change the image, by weight, and leave no trace after.

Runs the real engine on the tiny model (64x64, 3 steps) with adapter files made for it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.backend import ImageTask
from pipeline.errors import UserError
from pipeline.infotext import parse_parameters
from pipeline.lora.adapter import file_sha256
from pipeline.lora.cache import AdapterCache
from pipeline.lora.source import AdapterSource
from pipeline.request import LoraRef
from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine
from tests.pipeline.lora import make_files as mf

KINDS = {
    "lora": (False, mf.lora_parts),
    "locon": (True, mf.lora_parts),
    "loha": (True, mf.loha_parts),
    "lokr": (True, mf.lokr_parts),
}


class Files:
    """A `FileSource` over a dict of name -> path; every entry is enabled."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def names(self) -> Collection[str]:
        return list(self.paths)

    def resolve(self, name: str) -> tuple[Path, str]:
        if name not in self.paths:
            raise UserError(f"there is no LoRA named {name!r}")
        return self.paths[name], file_sha256(self.paths[name])


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("engine-loras")
    engine = tiny_engine()
    pipe = engine.models.get("tiny").pipe
    texts = mf.text_targets(pipe.text_encoder)
    loras = {}
    for kind, (conv, maker) in KINDS.items():
        tensors = mf.kohya_tensors(mf.unet_targets(pipe.unet, conv), texts, maker, 4, 4.0)
        loras[kind] = mf.write(folder / f"{kind}.safetensors", tensors)
    # A LoRA that bundles an embedding, as LyCORIS and sd-scripts write one.
    bundle = mf.kohya_tensors(mf.unet_targets(pipe.unet), texts, mf.lora_parts, 4, 4.0)
    bundle["bundle_emb.sksfox.string_to_param.*"] = torch.randn(3, 32)
    loras["bundle"] = mf.write(folder / "bundle.safetensors", bundle)
    embeddings = {"bad-emb": mf.write_embedding(folder / "bad-emb.safetensors", 32, 4, seed=5)}
    engine.adapters = AdapterSource(Files(loras), Files(embeddings), AdapterCache(64 * 1024**2))
    return engine


@pytest.fixture(scope="module")
def base(engine) -> np.ndarray:
    return pixels(run(engine, SMALL)[0])


def distance(image: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(image - other).mean())


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_image_more_with_a_larger_weight(engine, base, kind) -> None:
    near, far = (
        distance(pixels(run(engine, SMALL, loras=(LoraRef(kind, weight, weight),))[0]), base)
        for weight in (0.1, 0.4)
    )
    assert 0 < near < far


def test_weight_zero_is_the_base_image(engine, base) -> None:
    result = run(engine, SMALL, loras=(LoraRef("lora", 0.0, 0.0),))[0]
    assert np.array_equal(pixels(result), base)


def test_the_model_is_pristine_after_a_lora_batch(engine, base) -> None:
    run(engine, SMALL, loras=(LoraRef("locon", 1.0, 1.0), LoraRef("lokr", 0.5, 0.8)))
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)


def test_the_model_is_pristine_after_a_batch_that_failed_midway(engine, base) -> None:
    steps = iter(range(100))

    def stop_after_a_step() -> bool:
        if next(steps) == 1:
            raise RuntimeError("worker stopped")
        return False

    request = replace(SMALL, loras=(LoraRef("loha", 1.0, 1.0),))
    with pytest.raises(RuntimeError, match="worker stopped"):
        engine.run([ImageTask("test", 0, request)], lambda *_: None, stop_after_a_step)
    with pytest.raises(UserError, match="no LoRA named 'missing'"):
        run(engine, SMALL, loras=(LoraRef("lora", 1.0, 1.0), LoraRef("missing", 1.0, 1.0)))
    assert np.array_equal(pixels(run(engine, SMALL)[0]), base)


def test_infotext_names_each_lora_with_its_addnet_hash_as_a1111(engine) -> None:
    result = run(engine, SMALL, loras=(LoraRef("lora", 0.7, 0.7), LoraRef("lokr", 1.0, 1.0)))[0]
    _, _, fields = parse_parameters(result.parameters)
    lora, lokr = (_addnet_hash(engine.adapters.lora_files.paths[k]) for k in ("lora", "lokr"))
    assert fields["Lora hashes"] == f"lora: {lora}, lokr: {lokr}"


def _addnet_hash(path: Path) -> str:
    """kohya's addnet hash as A1111 and Civitai compute it: sha256 after the 8 + N header bytes,
    first 12 hex digits; written here from the format so the engine's own helper is not used."""
    import hashlib

    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]


def test_tags_stay_in_the_prompt_but_are_not_encoded(engine, base) -> None:
    tagged = run(engine, SMALL, prompt=SMALL.prompt + " <lora:lora:0.7>")[0]
    assert np.array_equal(pixels(tagged), base)
    assert tagged.parameters.startswith(SMALL.prompt + " <lora:lora:0.7>\n")


@pytest.mark.parametrize("field", ["prompt", "negative"])
def test_an_embedding_named_in_the_prompt_or_negative_changes_the_image(
    engine, base, field
) -> None:
    text = getattr(SMALL, field)
    result = run(engine, SMALL, **{field: f"{text} (bad-emb:1.2)".strip()})[0]
    plain = run(tiny_engine(), SMALL, **{field: f"{text} (bad-emb:1.2)".strip()})[0]
    assert distance(pixels(result), pixels(plain)) > 0


def test_a_bundled_embedding_works_while_its_lora_is_active(engine, base) -> None:
    """At weight 0 the LoRA patches nothing, so only its embedding can change the image."""
    prompt = f"{SMALL.prompt} sksfox"
    active = (LoraRef("bundle", 0.0, 0.0),)
    with_token = pixels(run(engine, SMALL, prompt=prompt, loras=active)[0])
    without_lora = pixels(run(engine, SMALL, prompt=prompt)[0])
    assert distance(with_token, without_lora) > 0
    assert np.array_equal(pixels(run(engine, SMALL, loras=active)[0]), base)


def test_infotext_names_the_embeddings_used_with_their_file_hash_as_a1111(engine) -> None:
    """A1111's `TI hashes`: the first 12 hex digits of the sha256 of the embedding's whole file."""
    import hashlib

    result = run(engine, SMALL, negative="(bad-emb:1.2), blurry")[0]
    fields = parse_parameters(result.parameters)[2]
    path = engine.adapters.embedding_files.paths["bad-emb"]
    assert fields["TI hashes"] == f"bad-emb: {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    assert "TI hashes" not in parse_parameters(run(engine, SMALL)[0].parameters)[2]
