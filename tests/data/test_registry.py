"""The LoRA and embedding registries: names, search, rename, enable, remove."""

from __future__ import annotations

import hashlib

import pytest

from data.registry import LoraKind, ModelBase, Source
from data.repositories import Repositories
from pipeline.errors import UserError


async def add_lora(repos: Repositories, name: str, **overrides: object):
    values = {
        "name": name,
        "sha256": hashlib.sha256(name.lower().encode()).hexdigest(),
        "path": f"loras/{name}.safetensors",
        "kind": LoraKind.LORA,
        "base": ModelBase.SD1,
        "modules": 192,
        "size_bytes": 37_000_000,
        "source": Source.ATTACHMENT,
        "rank": 16,
        "alpha": 8.0,
        "triggers": ("ghibli style",),
        "default_weight": 0.8,
        "added_by": 99,
    }
    values.update(overrides)
    return await repos.loras.add(**values)


async def test_add_and_get_in_any_case(repos: Repositories) -> None:
    added = await add_lora(repos, "Ghibli_Style")
    assert added.name == "Ghibli_Style"
    assert (added.rank, added.alpha, added.triggers) == (16, 8.0, ("ghibli style",))
    assert added.enabled is True and added.kind is LoraKind.LORA
    assert await repos.loras.get("ghibli_style") == added
    assert await repos.loras.get("GHIBLI_STYLE") == added
    assert await repos.loras.get("missing") is None
    assert await repos.loras.get("not a name") is None


# "\u212a" is the Kelvin sign: Python lowers it to ASCII 'k', SQLite's lower() leaves it alone.
@pytest.mark.parametrize("name", ["", "has space", "a" * 65, "emoji✨", "slash/name", "\u212a"])
async def test_bad_names_are_user_errors(repos: Repositories, name: str) -> None:
    with pytest.raises(UserError, match="letters, digits"):
        await add_lora(repos, name)


async def test_name_taken_in_another_case_is_refused(repos: Repositories) -> None:
    await add_lora(repos, "fox")
    with pytest.raises(UserError, match="'fox' is taken by another LoRA"):
        await add_lora(repos, "FOX", sha256="c" * 64)


async def test_same_file_twice_is_refused(repos: Repositories) -> None:
    first = await add_lora(repos, "fox")
    with pytest.raises(UserError, match="already registered as 'fox'"):
        await add_lora(repos, "fox2", sha256=first.sha256)


async def test_list_searches_names_and_filters_enabled(repos: Repositories) -> None:
    for name in ("fox_ears", "Foxy", "cat", "boxx", "f_x"):
        await add_lora(repos, name)
    await repos.loras.set_enabled("foxy", False)
    assert [e.name for e in await repos.loras.list()] == ["boxx", "cat", "f_x", "fox_ears", "Foxy"]
    assert [e.name for e in await repos.loras.list(search="FOX")] == ["fox_ears", "Foxy"]
    assert [e.name for e in await repos.loras.list(search="fox", enabled=True)] == ["fox_ears"]
    assert [e.name for e in await repos.loras.list(enabled=False)] == ["Foxy"]
    # '_' is a LIKE wildcard; searching for it must match only a literal underscore.
    assert [e.name for e in await repos.loras.list(search="_")] == ["f_x", "fox_ears"]
    assert await repos.loras.names() == ["boxx", "cat", "f_x", "fox_ears"]
    assert "Foxy" in await repos.loras.names(enabled_only=False)


async def test_rename(repos: Repositories) -> None:
    await add_lora(repos, "fox")
    await add_lora(repos, "cat")
    renamed = await repos.loras.rename("FOX", "Fox_v2")
    assert renamed.name == "Fox_v2"
    assert await repos.loras.get("fox") is None
    assert (await repos.loras.get("fox_v2")).id == renamed.id
    assert (await repos.loras.rename("fox_v2", "FOX_V2")).name == "FOX_V2"
    with pytest.raises(UserError, match="'cat' is taken"):
        await repos.loras.rename("fox_v2", "Cat")
    with pytest.raises(UserError, match="no LoRA named 'dog'"):
        await repos.loras.rename("dog", "wolf")
    with pytest.raises(UserError, match="not allowed"):
        await repos.loras.rename("cat", "bad name")


async def test_set_enabled_and_remove(repos: Repositories) -> None:
    await add_lora(repos, "fox")
    assert (await repos.loras.set_enabled("Fox", False)).enabled is False
    assert (await repos.loras.get("fox")).enabled is False
    removed = await repos.loras.remove("fox")
    assert removed.path == "loras/fox.safetensors"
    assert await repos.loras.get("fox") is None
    with pytest.raises(UserError, match="no LoRA named"):
        await repos.loras.remove("fox")


async def test_embeddings_have_their_own_namespace(repos: Repositories) -> None:
    await add_lora(repos, "easynegative")
    embedding = await repos.embeddings.add(
        name="EasyNegative",
        sha256="e" * 64,
        path="embeddings/easynegative.safetensors",
        base=ModelBase.SD1,
        vectors=8,
        size_bytes=25_000,
        source=Source.FOLDER,
    )
    assert embedding.vectors == 8 and embedding.added_by is None
    assert await repos.embeddings.get("easynegative") == embedding
    assert await repos.embeddings.names() == ["EasyNegative"]
    with pytest.raises(UserError, match="taken by another embedding"):
        await repos.embeddings.add(
            name="easyNEGATIVE",
            sha256="f" * 64,
            path="x",
            base=ModelBase.SD1,
            vectors=1,
            size_bytes=1,
            source=Source.CLI,
        )
