"""The LoRA and embedding libraries: checked, content-addressed files and their registry rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.library import (
    AlreadyRegistered,
    EmbeddingLibrary,
    LoraLibrary,
    safe_name,
)
from data.files import FileStore
from data.registry import LoraKind, Source
from data.repositories import Repositories
from pipeline.errors import UserError
from tests.bot.library_files import WIDTH, write_embedding, write_lora
from tests.pipeline.lora import make_files as mf


@pytest.fixture
async def loras(repos: Repositories, tmp_path: Path) -> LoraLibrary:
    library = LoraLibrary(repos.loras, tmp_path / "data", WIDTH)
    await library.refresh()
    return library


@pytest.fixture
async def embeddings(repos: Repositories, tmp_path: Path) -> EmbeddingLibrary:
    library = EmbeddingLibrary(repos.embeddings, tmp_path / "data", WIDTH)
    await library.refresh()
    return library


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_files(library: LoraLibrary | EmbeddingLibrary) -> list[str]:
    """Every file directly in the store folder (final and temporary), by name."""
    folder = library.store.folder
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


async def test_add_stores_the_file_by_sha256_and_registers_what_it_is(loras, tmp_path) -> None:
    source = write_lora(tmp_path / "download.safetensors")
    entry = await loras.add(source, weight=0.7, added_by=42, source=Source.URL)
    sha = sha256_of(source)
    assert entry.name == "test-subject"  # from ss_output_name
    assert (entry.sha256, entry.path) == (sha, f"loras/{sha}.safetensors")
    assert (entry.kind, entry.rank, entry.alpha, entry.modules) == (LoraKind.LORA, 4, 2.0, 2)
    assert entry.triggers == ("sks dog", "grass")
    assert (entry.default_weight, entry.added_by, entry.source) == (0.7, 42, Source.URL)
    assert store_files(loras) == [f"{sha}.safetensors"]
    assert source.exists()  # copied, not moved
    path, resolved_sha = loras.resolve("TEST-SUBJECT")
    assert resolved_sha == sha and path.read_bytes() == source.read_bytes()


async def test_without_metadata_the_name_is_the_file_stem_made_safe(loras, tmp_path) -> None:
    source = write_lora(tmp_path / "My Style (v2).safetensors", output_name=None)
    assert (await loras.add(source)).name == "My_Style_v2"
    assert safe_name("..//weird name//..") == "weird_name"
    assert safe_name("?!") == "unnamed"


async def test_a_taken_name_is_refused_with_a_free_one_suggested(loras, tmp_path) -> None:
    await loras.add(write_lora(tmp_path / "a.safetensors", seed=1))
    await loras.add(write_lora(tmp_path / "b.safetensors", seed=2), name="test-subject-2")
    with pytest.raises(UserError, match=r"'test-subject' is taken .* 'test-subject-3'"):
        await loras.add(write_lora(tmp_path / "c.safetensors", seed=3))
    with pytest.raises(UserError, match="not allowed"):
        await loras.add(write_lora(tmp_path / "d.safetensors", seed=4), name="no spaces")
    assert len(store_files(loras)) == 2


async def test_the_same_file_is_stored_once(loras, tmp_path) -> None:
    source = write_lora(tmp_path / "a.safetensors")
    await loras.add(source)
    with pytest.raises(AlreadyRegistered, match="already in the LoRA library as 'test-subject'"):
        await loras.add(source, name="other")
    assert len(store_files(loras)) == 1


def truncated(path: Path) -> Path:
    return mf.truncate(write_lora(path.with_name("whole.safetensors")), path)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (mf.write_png, "PNG image"),
        (write_embedding, "embedding, not a LoRA"),
        (truncated, "bad.safetensors is truncated"),
    ],
)
async def test_a_refused_file_leaves_nothing_behind(loras, tmp_path, make, reason) -> None:
    path = make(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match=reason):
        await loras.add(path)
    assert store_files(loras) == []
    assert await loras.list() == []


async def test_a_failed_registration_removes_the_placed_file(loras, tmp_path, monkeypatch) -> None:
    async def broken_add(**_: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(loras.registry, "add", broken_add)
    with pytest.raises(RuntimeError):
        await loras.add(write_lora(tmp_path / "a.safetensors"))
    assert store_files(loras) == []


def test_a_failed_copy_removes_its_temp_file(tmp_path, monkeypatch) -> None:
    store = FileStore(tmp_path / "store")

    def failing_fsync(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("data.files.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        store.stage(write_lora(tmp_path / "a.safetensors"), "a.safetensors")
    assert list(store.folder.iterdir()) == []


async def test_resolve_refuses_unknown_and_disabled_names(loras, tmp_path) -> None:
    await loras.add(write_lora(tmp_path / "a.safetensors"), name="fox")
    await loras.add(write_lora(tmp_path / "b.safetensors", seed=1), name="cat")
    await loras.set_enabled("cat", False)
    assert loras.names() == ["fox"]
    with pytest.raises(UserError, match="'cat' is disabled"):
        loras.resolve("cat")
    with pytest.raises(UserError, match="no LoRA named 'dog'"):
        loras.resolve("dog")
    await loras.set_enabled("cat", True)
    assert sorted(loras.names()) == ["cat", "fox"]


async def test_rename_and_remove(loras, tmp_path) -> None:
    await loras.add(write_lora(tmp_path / "a.safetensors"), name="fox")
    await loras.rename("fox", "Fox_v2")
    assert loras.names() == ["Fox_v2"]
    path, _ = loras.resolve("fox_v2")
    removed = await loras.remove("FOX_V2")
    assert removed.name == "Fox_v2" and not path.exists()
    assert loras.names() == [] and store_files(loras) == []
    with pytest.raises(UserError, match="no LoRA named 'Fox_v2'"):
        await loras.info("Fox_v2")


async def test_scan_moves_accepted_files_and_explains_the_rest(loras, tmp_path) -> None:
    incoming = loras.drop_folder
    incoming.mkdir(parents=True)
    duplicate = write_lora(tmp_path / "dup.safetensors", seed=7, output_name="dup")
    await loras.add(duplicate)
    write_lora(incoming / "good.safetensors", output_name=None)
    (incoming / "copy.safetensors").write_bytes(duplicate.read_bytes())
    write_embedding(incoming / "emb.safetensors")
    mf.write_png(incoming / "picture.safetensors")
    (incoming / "notes.txt").write_text("ignored")

    outcomes = {o.file: o for o in await loras.scan()}
    assert set(outcomes) == {"good.safetensors", "copy.safetensors", "emb.safetensors",
                             "picture.safetensors"}  # fmt: skip
    assert outcomes["good.safetensors"].added == "good"
    assert "already in the library as 'dup'" in outcomes["copy.safetensors"].message
    assert "left in place" in outcomes["emb.safetensors"].message
    assert [name for name, o in outcomes.items() if o.refused] == [
        "emb.safetensors",
        "picture.safetensors",
    ]
    assert "PNG" in outcomes["picture.safetensors"].message
    assert sorted(p.name for p in incoming.iterdir()) == [
        "emb.safetensors",
        "notes.txt",
        "picture.safetensors",
    ]
    assert sorted(loras.names()) == ["dup", "good"]


async def test_a_bug_met_on_one_file_does_not_stop_the_scan(loras, monkeypatch) -> None:
    """A bug cannot be made on purpose, so the inspector fails for one file as a bug would."""
    incoming = loras.drop_folder
    incoming.mkdir(parents=True)
    write_lora(incoming / "a-broken.safetensors", seed=1, output_name=None)
    write_lora(incoming / "b-good.safetensors", seed=2, output_name=None)
    inspect = loras._inspect

    def buggy_for_one(path: Path):
        if path.name == "a-broken.safetensors":
            raise RuntimeError("a bug\nover two lines")
        return inspect(path)

    monkeypatch.setattr(loras, "_inspect", buggy_for_one)
    outcomes = {o.file: o for o in await loras.scan()}
    broken = outcomes["a-broken.safetensors"]
    assert broken.refused and "\n" not in broken.message
    assert "could not be checked (RuntimeError: a bug over two lines)" in broken.message
    assert outcomes["b-good.safetensors"].added == "b-good"
    assert (incoming / "a-broken.safetensors").exists()


async def test_an_embedding_is_added_under_a_name_prompts_can_use(embeddings, tmp_path) -> None:
    entry = await embeddings.add(write_embedding(tmp_path / "EasyNegative.safetensors", 3))
    assert (entry.name, entry.vectors, entry.path) == (
        "EasyNegative",
        3,
        f"embeddings/{entry.sha256}.safetensors",
    )
    assert embeddings.names() == ["EasyNegative"]
    with pytest.raises(UserError, match="single word of the model's vocabulary"):
        await embeddings.add(write_embedding(tmp_path / "style.safetensors", seed=1))
    with pytest.raises(UserError, match="is a lora, not a textual-inversion embedding"):
        await embeddings.add(write_lora(tmp_path / "x.safetensors"), name="my-emb")


async def test_a_default_weight_out_of_range_is_refused(loras, tmp_path) -> None:
    with pytest.raises(UserError, match="default weight 9 is out of range"):
        await loras.add(write_lora(tmp_path / "a.safetensors"), weight=9)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.lists(st.binary(max_size=512), max_size=3),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
async def test_a_scan_answers_for_every_file_whatever_it_holds(
    loras, tmp_path, garbage: list[bytes], flips: list[tuple[int, int]]
) -> None:
    """Arbitrary bytes and kohya LoRAs with a damaged byte: the scan never raises, and each file
    is added or left in place with its reason."""
    incoming = loras.drop_folder
    incoming.mkdir(parents=True, exist_ok=True)
    valid = write_lora(tmp_path / "valid.safetensors", output_name=None).read_bytes()
    for index, data in enumerate(garbage):
        (incoming / f"garbage-{index}.safetensors").write_bytes(data)
    for index, (at, value) in enumerate(flips):
        damaged = bytearray(valid)
        damaged[at % len(damaged)] = value
        (incoming / f"flipped-{index}.safetensors").write_bytes(bytes(damaged))
    outcomes = await loras.scan()
    assert len(outcomes) == len(garbage) + len(flips)
    for outcome in outcomes:
        assert outcome.message
        assert outcome.refused == (incoming / outcome.file).exists()
    for path in incoming.iterdir():
        path.unlink()
