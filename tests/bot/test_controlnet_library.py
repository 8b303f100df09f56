"""The ControlNet library: checked files in DATA_DIR/controlnets, rows in a real SQLite file."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from bot import container
from bot.guild import Actor
from bot.libraries import Libraries
from bot.library import (
    AlreadyRegistered,
    ControlNetLibrary,
    EmbeddingLibrary,
    HypernetworkLibrary,
    LoraLibrary,
    attention_widths,
)
from bot.models import build_engine
from bot.settings import load_settings
from data.db import Database
from data.registry import ControlLayout, ModelBase, Source
from data.repositories import Repositories
from pipeline.control.model_types import ControlType
from pipeline.errors import UserError
from pipeline.tiny import TINY_WIDTH
from tests.bot.library_files import write_lora
from tests.bot.test_jobs import RecordingDelivery
from tests.control_files import tiny_controlnet, write_diffusers_layout, write_original_layout
from tests.pipeline.control.controlnet_files import diffusers_shapes, write_header_only
from tests.pipeline.fakes import FakeBackend

ADMIN = Actor(guild_id=7, user_id=42)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return tiny_controlnet(seed=1)


@pytest.fixture
async def library(repos: Repositories, tmp_path: Path) -> ControlNetLibrary:
    library = ControlNetLibrary(repos.controlnets, tmp_path / "data", TINY_WIDTH)
    await library.refresh()
    return library


@pytest.fixture
async def libraries(repos: Repositories, library: ControlNetLibrary, tmp_path: Path) -> Libraries:
    data = tmp_path / "data"
    return Libraries(
        LoraLibrary(repos.loras, data, TINY_WIDTH),
        EmbeddingLibrary(repos.embeddings, data, TINY_WIDTH),
        HypernetworkLibrary(repos.hypernetworks, data, TINY_WIDTH, attention_widths("tiny")),
        library,
        repos.audit,
    )


async def test_add_registers_what_the_file_is(library, tiny, tmp_path) -> None:
    source = write_original_layout(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
    entry = await library.add(source, added_by=7, source=Source.ATTACHMENT)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (entry.name, entry.sha256, entry.base) == ("control_v11p_sd15_canny", sha, ModelBase.SD1)
    assert (entry.control_type, entry.layout) == (ControlType.CANNY, ControlLayout.ORIGINAL)
    assert entry.hint_channels == tiny.config.conditioning_channels
    assert entry.parameters == sum(parameter.numel() for parameter in tiny.parameters())
    assert (entry.size_bytes, entry.added_by) == (source.stat().st_size, 7)
    assert library.store.path_of(sha).read_bytes() == source.read_bytes()
    assert library.names() == ["control_v11p_sd15_canny"]
    assert library.resolve("CONTROL_v11p_sd15_canny") == (library.store.path_of(sha), sha)


async def test_the_type_is_guessed_from_the_file_or_given(library, tiny, tmp_path) -> None:
    depth = await library.add(
        write_diffusers_layout(tmp_path / "d.safetensors", tiny),
        filename="control_v11f1p_sd15_depth.safetensors",
    )
    assert (depth.name, depth.control_type, depth.layout) == (
        "control_v11f1p_sd15_depth",
        ControlType.DEPTH,
        ControlLayout.DIFFUSERS,
    )
    other = tiny_controlnet(seed=2)
    given = await library.add(
        write_diffusers_layout(tmp_path / "control_v11p_sd15_canny.safetensors", other),
        name="pose",
        control_type=ControlType.OPENPOSE,
    )
    assert (given.name, given.control_type) == ("pose", ControlType.OPENPOSE)
    unnamed = await library.add(
        write_diffusers_layout(tmp_path / "mine.safetensors", tiny_controlnet(seed=4)),
        name="tile_model",
    )
    assert unnamed.control_type == ControlType.TILE  # the chosen name, when the file's says none


async def test_type_rename_disable_and_remove(library, tiny, tmp_path) -> None:
    entry = await library.add(write_original_layout(tmp_path / "cn.safetensors", tiny))
    assert entry.control_type == ControlType.OTHER
    assert (await library.set_control_type("CN", ControlType.SCRIBBLE)).control_type == "scribble"
    await library.rename("cn", "scribbles")
    assert (await library.info("scribbles")).control_type == ControlType.SCRIBBLE
    await library.set_enabled("scribbles", False)
    assert library.names() == []
    with pytest.raises(UserError, match="is disabled"):
        library.resolve("scribbles")
    await library.remove("scribbles")
    assert not library.store.path_of(entry.sha256).exists()
    with pytest.raises(UserError, match="there is no ControlNet named 'scribbles'"):
        library.resolve("scribbles")


async def test_the_rows_survive_a_reopened_database(library, tiny, tmp_path) -> None:
    await library.add(write_original_layout(tmp_path / "control_sd15_canny.safetensors", tiny))
    db = await Database.open(tmp_path / "dreamcord.db")
    try:
        entries = await Repositories.over(db).controlnets.list()
    finally:
        await db.close()
    assert [(entry.name, entry.control_type, entry.layout) for entry in entries] == [
        ("control_sd15_canny", "canny", "original")
    ]


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda path, _: write_lora(path), "it is a LoRA, not a ControlNet"),
        (
            lambda path, tiny: write_header_only(
                path, diffusers_shapes(tiny) | {"add_embedding.linear_1.weight": (128, 2816)}
            ),
            "it is an SDXL ControlNet: Dreamcord runs SD1.5; use an SD1.5 ControlNet such as "
            "control_v11p_sd15_canny",
        ),
    ],
)
async def test_refused_files_leave_nothing_behind(library, tiny, tmp_path, write, message) -> None:
    source = write(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
    with pytest.raises(
        UserError,
        match=re.escape(f"control_v11p_sd15_canny.safetensors cannot be added: {message}"),
    ):
        await library.add(source)
    assert await library.list() == []
    assert [path for path in library.store.folder.rglob("*") if path.is_file()] == []
    assert source.exists()


async def test_the_same_file_twice_names_the_entry_it_is(library, tiny, tmp_path) -> None:
    source = write_original_layout(tmp_path / "a.safetensors", tiny)
    await library.add(source)
    with pytest.raises(AlreadyRegistered, match="already in the ControlNet library as 'a'"):
        await library.add(source, name="b")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("loras", "it is a ControlNet, not a LoRA: add it as a ControlNet (`controlnet add`)"),
        ("embeddings", "it is a ControlNet, not a textual-inversion embedding: add it as a "),
        ("hypernetworks", "it is a ControlNet, not a hypernetwork: add it as a ControlNet"),
    ],
)
async def test_the_other_libraries_send_a_controlnet_here(
    libraries, tiny, tmp_path, kind, message
) -> None:
    other = getattr(libraries, kind).library
    with pytest.raises(UserError, match=re.escape(message)):
        await other.add(
            write_original_layout(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
        )
    assert await other.list() == []


async def test_scan_adds_the_drop_folder_and_leaves_refusals(library, tiny, tmp_path) -> None:
    library.drop_folder.mkdir(parents=True)
    write_original_layout(library.drop_folder / "control_v11p_sd15_openpose.safetensors", tiny)
    write_lora(library.drop_folder / "a_lora.safetensors")
    (library.drop_folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    outcomes = {outcome.file: outcome for outcome in await library.scan()}
    assert outcomes["control_v11p_sd15_openpose.safetensors"].added == "control_v11p_sd15_openpose"
    assert (await library.info("control_v11p_sd15_openpose")).control_type == "openpose"
    assert outcomes["a_lora.safetensors"].refused
    assert "it is a LoRA, not a ControlNet" in outcomes["a_lora.safetensors"].message
    assert outcomes["broken.safetensors"].refused
    assert sorted(path.name for path in library.drop_folder.iterdir()) == [
        "a_lora.safetensors",
        "broken.safetensors",
    ]


async def test_every_change_is_audited(libraries, repos, tiny, tmp_path) -> None:
    controlnets = libraries.of("controlnet")
    assert controlnets is libraries.controlnets
    source = write_original_layout(tmp_path / "control_v11p_sd15_canny.safetensors", tiny)
    entry = await controlnets.add_file(source, ADMIN)
    assert (await controlnets.info(entry.name)).control_type == "canny"
    await controlnets.set_control_type(entry.name, "Lineart", ADMIN)
    await controlnets.rename(entry.name, "lines", ADMIN)
    await controlnets.remove("lines", ADMIN)
    audit = await repos.audit.list_for_guild(7)  # newest first
    assert [(row.action, row.target) for row in reversed(audit)] == [
        ("controlnet.add", "control_v11p_sd15_canny"),
        ("controlnet.type", "control_v11p_sd15_canny"),
        ("controlnet.rename", "control_v11p_sd15_canny"),
        ("controlnet.remove", "lines"),
    ]
    assert audit[2].detail == {"type": "lineart"}


async def test_a_wrong_type_and_a_typeless_library_are_refused(libraries) -> None:
    with pytest.raises(UserError, match="'pose' is not a ControlNet type"):
        await libraries.controlnets.set_control_type("any", "pose", ADMIN)
    with pytest.raises(UserError, match="only ControlNets"):
        await libraries.loras.set_control_type("any", "canny", ADMIN)


def test_uploads_are_capped_at_one_and_a_half_gib(libraries) -> None:
    controlnets = libraries.controlnets
    controlnets.check_upload("control_v11p_sd15_canny.safetensors", 1_445_000_000)  # fp32: fits
    with pytest.raises(UserError, match=r"more than the 1536\.0 MiB allowed for a ControlNet"):
        controlnets.check_upload("big.safetensors", 1537 * 1024**2)
    with pytest.raises(UserError, match=r"only \.safetensors is accepted"):
        controlnets.check_upload("control_v11p_sd15_canny.pth", 1000)


async def test_the_start_adds_dropped_controlnets_and_gives_them_to_the_engine(
    tmp_path, tiny, monkeypatch, caplog
) -> None:
    settings = load_settings(None, model="tiny", data_dir=tmp_path / "data")
    incoming = settings.data_dir / "controlnets" / "incoming"
    incoming.mkdir(parents=True)
    write_original_layout(incoming / "control_v11p_sd15_canny.safetensors", tiny)
    write_lora(incoming / "a_lora.safetensors")
    built: dict[str, Any] = {}

    def recording_build(settings, model_override, libraries, controlnets) -> FakeBackend:
        built["controlnets"] = controlnets  # the real engine is built in the next test
        return FakeBackend()

    monkeypatch.setattr(container, "build_engine", recording_build)
    with caplog.at_level(logging.INFO, logger="bot.container"):
        services = await container.open_services(settings, RecordingDelivery())
    try:
        assert built["controlnets"].names() == ["control_v11p_sd15_canny"]
        assert services.app.libraries.controlnets.library is built["controlnets"]
    finally:
        await services.close()
    assert sorted(path.name for path in incoming.iterdir()) == ["a_lora.safetensors"]
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert refused == [
        "drop folder: a_lora.safetensors: left in place: a_lora.safetensors cannot be added: "
        "it is a LoRA, not a ControlNet: add it with `lora add`"
    ]


def test_the_engine_finds_controlnets_by_name(library) -> None:
    engine = build_engine(load_settings(None, model="tiny"), controlnets=library)
    assert engine.controlnets is library
