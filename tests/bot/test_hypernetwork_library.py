"""The hypernetwork library: checked files in DATA_DIR/hypernetworks, rows in a real SQLite file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bot.library import HypernetworkLibrary, LoraLibrary, attention_widths
from data.db import Database
from data.registry import ModelBase, Source
from data.repositories import Repositories
from pipeline.errors import UserError
from tests.bot.library_files import WIDTH, write_embedding, write_lora
from tests.pipeline.lora.hypernet_files import write_hypernetwork


@pytest.fixture
async def library(repos: Repositories, tmp_path: Path) -> HypernetworkLibrary:
    library = HypernetworkLibrary(
        repos.hypernetworks, tmp_path / "data", WIDTH, attention_widths("tiny")
    )
    await library.refresh()
    return library


async def test_add_registers_what_the_file_holds(library, tmp_path) -> None:
    source = write_hypernetwork(tmp_path / "Anime Style.safetensors", layer_norm=True)
    entry = await library.add(source, added_by=7, source=Source.ATTACHMENT)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (entry.name, entry.sha256, entry.base) == ("Anime_Style", sha, ModelBase.SD1)
    assert (entry.widths, entry.structure) == ((32, 64), (1.0, 2.0, 1.0))
    assert (entry.activation, entry.layer_norm, entry.added_by) == ("relu", True, 7)
    assert library.store.path_of(sha).read_bytes() == source.read_bytes()
    assert library.names() == ["Anime_Style"]
    assert library.resolve("anime_style") == (library.store.path_of(sha), sha)


async def test_list_rename_disable_and_remove(library, tmp_path) -> None:
    first = await library.add(write_hypernetwork(tmp_path / "a.safetensors", seed=1))
    await library.add(write_hypernetwork(tmp_path / "b.safetensors", seed=2), name="beta")
    assert [entry.name for entry in await library.list()] == ["a", "beta"]
    assert [entry.name for entry in await library.list("bet")] == ["beta"]
    await library.rename("a", "alpha")
    await library.set_enabled("beta", False)
    assert library.names() == ["alpha"]
    with pytest.raises(UserError, match="is disabled"):
        library.resolve("beta")
    removed = await library.remove("alpha")
    assert removed.sha256 == first.sha256
    assert not library.store.path_of(first.sha256).exists()
    assert [entry.name for entry in await library.list()] == ["beta"]


async def test_the_rows_survive_a_reopened_database(repos, library, tmp_path) -> None:
    await library.add(write_hypernetwork(tmp_path / "kept.safetensors"))
    db = await Database.open(tmp_path / "dreamcord.db")
    try:
        entries = await Repositories.over(db).hypernetworks.list()
    finally:
        await db.close()
    assert [(entry.name, entry.widths) for entry in entries] == [("kept", (32, 64))]


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (write_lora, "it is a lora, not a hypernetwork: add it as a LoRA"),
        (write_embedding, "it is a textual-inversion embedding, not a hypernetwork"),
    ],
)
async def test_other_kinds_are_refused_with_where_they_belong(
    library, tmp_path, write, message
) -> None:
    with pytest.raises(UserError, match=message):
        await library.add(write(tmp_path / "other.safetensors"))
    assert await library.list() == []


async def test_a_hypernetwork_for_another_model_is_refused(library, tmp_path) -> None:
    with pytest.raises(UserError, match="width 320, 768, which no attention layer"):
        await library.add(write_hypernetwork(tmp_path / "sd1.safetensors", widths=(320, 768)))


async def test_the_lora_library_sends_hypernetworks_to_their_own(repos, tmp_path) -> None:
    loras = LoraLibrary(repos.loras, tmp_path / "data", WIDTH)
    await loras.refresh()
    with pytest.raises(UserError, match=r"hypernetwork, not a LoRA: .*`hypernetwork add`"):
        await loras.add(write_hypernetwork(tmp_path / "h.safetensors"))


async def test_scan_adds_the_drop_folder(library, tmp_path) -> None:
    library.drop_folder.mkdir(parents=True)
    write_hypernetwork(library.drop_folder / "dropped.safetensors")
    write_lora(library.drop_folder / "lora.safetensors")
    outcomes = {outcome.file: outcome for outcome in await library.scan()}
    assert outcomes["dropped.safetensors"].added == "dropped"
    assert outcomes["lora.safetensors"].refused
    assert (library.drop_folder / "lora.safetensors").exists()
