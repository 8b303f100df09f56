"""Library files on remote workers: the bot's signed file server and a worker's verified cache.

The real aiohttp server on a free port serves real library files (a LoRA and an embedding
added through the libraries); requests are signed here with `hmac` directly (RFC 2104), not
with the code under test, and bytes are compared with hashlib's sha256 of the source files.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.file_cache import BotFiles, FileUnavailable, SharedFolder, WorkerFiles
from bot.file_server import file_app, parse_bind, serve_files
from bot.library import EmbeddingLibrary, LoraLibrary
from bot.settings import load_settings
from bot.uploads import store_init_image
from bot.worker_files import FILE_KINDS, LibraryFiles, file_path, parse_file_ref
from data.repositories import Repositories
from pipeline.backend import ImageTask
from pipeline.errors import UserError
from pipeline.remote.manifest import FileManifest
from pipeline.remote.messages import Batch
from pipeline.request import ControlUnit, GenerationRequest, ImagePrompt, LoraRef, Mode
from pipeline.upscalers import UpscalerCatalog
from tests.bot.library_files import WIDTH, write_embedding, write_lora
from tests.bot.test_metrics import free_port

SECRET = "a shared secret between bot and workers"
HEADER = "X-Dreamcord-Signature"


def signature(secret: str, kind: str, sha256: str) -> str:
    return hmac.new(secret.encode(), f"{kind}/{sha256}".encode(), hashlib.sha256).hexdigest()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


@dataclass
class Bot:
    """The bot's side: its data folder, libraries, file index and running server."""

    data_dir: Path
    loras: LoraLibrary
    embeddings: EmbeddingLibrary
    files: LibraryFiles
    url: str
    requests: list[str]
    lora_source: Path
    lora_sha: str
    repos: Repositories


@pytest.fixture
async def bot(repos: Repositories, tmp_path: Path) -> AsyncIterator[Bot]:
    from bot.library import ControlNetLibrary, HypernetworkLibrary

    data_dir = tmp_path / "bot"
    loras = LoraLibrary(repos.loras, data_dir, WIDTH)
    embeddings = EmbeddingLibrary(repos.embeddings, data_dir, WIDTH)
    hypernetworks = HypernetworkLibrary(repos.hypernetworks, data_dir, WIDTH, (WIDTH,))
    controlnets = ControlNetLibrary(repos.controlnets, data_dir, WIDTH)
    for library in (loras, embeddings, hypernetworks, controlnets):
        await library.refresh()
    source = write_lora(tmp_path / "fox.safetensors")
    await loras.add(source, name="fox")
    await embeddings.add(write_embedding(tmp_path / "grainy.safetensors"), name="grainy")
    upscalers = UpscalerCatalog(data_dir / "upscalers")
    files = LibraryFiles.over(
        loras, embeddings, hypernetworks, controlnets, upscalers, repos.jobs.active_pictures
    )
    requests: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler):  # type: ignore[no-untyped-def]
        requests.append(request.path)
        return await handler(request)

    app = file_app(files, SECRET)
    app.middlewares.append(count)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Bot(
            data_dir,
            loras,
            embeddings,
            files,
            f"http://127.0.0.1:{port}",
            requests,
            source,
            sha256_of(source),
            repos,
        )
    finally:
        await runner.cleanup()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.read()


# --- the server ---


async def test_the_right_signature_gets_the_stored_bytes(bot: Bot) -> None:
    sha = bot.lora_sha
    status, body = await get(
        f"{bot.url}/files/loras/{sha}", {HEADER: signature(SECRET, "loras", sha)}
    )
    assert status == 200
    assert body == bot.lora_source.read_bytes()


async def test_a_wrong_or_missing_signature_is_refused_and_logged(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    sha = bot.lora_sha
    with caplog.at_level(logging.WARNING, logger="bot.file_server"):
        wrong, _ = await get(
            f"{bot.url}/files/loras/{sha}", {HEADER: signature("another secret", "loras", sha)}
        )
        missing, _ = await get(f"{bot.url}/files/loras/{sha}")
    assert (wrong, missing) == (401, 401)
    refusals = [r for r in caplog.records if "WORKER_SECRET" in r.getMessage()]
    assert len(refusals) == 2 and "127.0.0.1" in refusals[0].getMessage()


async def test_an_unknown_hash_or_a_name_that_is_no_hash_is_not_found(bot: Bot) -> None:
    unknown = "0" * 64
    names = [
        ("loras", unknown),  # well formed, not in the library
        ("embeddings", bot.lora_sha),  # a LoRA's hash asked as an embedding
        ("loras", bot.lora_sha.upper()),
        ("loras", bot.lora_sha[:63]),
        ("loras", f"{bot.lora_sha}.safetensors"),
        ("checkpoints", bot.lora_sha),
        ("loras", "..%2F..%2Fdreamcord.db"),
    ]
    for kind, name in names:
        status, _ = await get(
            f"{bot.url}/files/{kind}/{name}", {HEADER: signature(SECRET, kind, unquote(name))}
        )
        assert status == 404, (kind, name)


# --- the worker's cache ---


async def test_a_worker_fetches_a_missing_file_once_and_resolves_it_by_name(
    bot: Bot, tmp_path: Path
) -> None:
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    await worker.prepare({"loras": {"fox": bot.lora_sha}})
    path, sha = worker.sources["loras"].resolve("FOX")  # names resolve as the library's do
    assert sha == bot.lora_sha and sha256_of(path) == bot.lora_sha
    assert path.is_relative_to(tmp_path / "worker")
    assert list(worker.sources["loras"].names()) == ["fox"]
    await WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET)).prepare(
        {"loras": {"fox": bot.lora_sha}}
    )  # a restarted worker finds its cache
    assert len(bot.requests) == 1


async def test_two_batches_needing_the_same_missing_file_share_one_download(
    bot: Bot, tmp_path: Path
) -> None:
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    manifest = {"loras": {"fox": bot.lora_sha}}
    await asyncio.gather(worker.prepare(manifest), worker.prepare(manifest))
    assert worker.downloads == 1
    assert bot.requests == [f"/files/loras/{bot.lora_sha}"]


async def test_a_file_changed_in_transit_is_refused_and_nothing_is_kept(
    bot: Bot, tmp_path: Path
) -> None:
    stored = bot.loras.store.path_of(bot.lora_sha)
    stored.write_bytes(stored.read_bytes()[:-1] + b"!")  # the bot's copy no longer matches
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    with pytest.raises(FileUnavailable, match="arrived changed"):
        await worker.prepare({"loras": {"fox": bot.lora_sha}})
    assert files_under(tmp_path / "worker") == []
    with pytest.raises(Exception, match="no LoRA 'fox'"):
        worker.sources["loras"].resolve("fox")


async def test_a_worker_with_the_wrong_secret_is_told_which_setting_to_fix(
    bot: Bot, tmp_path: Path
) -> None:
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, "not the secret"))
    with pytest.raises(FileUnavailable, match="same WORKER_SECRET"):
        await worker.prepare({"loras": {"fox": bot.lora_sha}})
    assert files_under(tmp_path / "worker") == []


async def test_an_unreachable_bot_names_the_url_and_the_setting(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    worker = WorkerFiles(tmp_path / "worker", BotFiles(url, SECRET))
    with pytest.raises(FileUnavailable, match=f"cannot fetch {url}/files/loras/.*WORKER_FILES_URL"):
        await worker.prepare({"loras": {"fox": "a" * 64}})


async def test_a_shared_folder_is_read_in_place(bot: Bot, tmp_path: Path) -> None:
    worker = WorkerFiles(tmp_path / "worker", shared=SharedFolder(bot.data_dir))
    await worker.prepare({"loras": {"fox": bot.lora_sha}})
    path, _ = worker.sources["loras"].resolve("fox")
    assert path == bot.loras.store.path_of(bot.lora_sha)
    assert bot.requests == [] and files_under(tmp_path / "worker") == []
    with pytest.raises(FileUnavailable, match="not in WORKER_FILES_DIR"):
        await worker.prepare({"loras": {"gone": "b" * 64}})


# --- the manifest a batch carries ---


async def test_an_upscaler_model_reaches_the_worker_under_its_bot_name(
    bot: Bot, tmp_path: Path
) -> None:
    upscaler = bot.data_dir / "upscalers" / "4x-Test.safetensors"
    upscaler.parent.mkdir(parents=True)
    upscaler.write_bytes(b"an ESRGAN model's bytes")
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    await worker.prepare({"upscalers": {"4x-Test": sha256_of(upscaler)}})
    model = worker.upscalers.upscale_model()
    assert model is not None and model.name == "4x-Test"
    assert model.model_file is not None and model.model_file.read_bytes() == upscaler.read_bytes()
    assert worker.upscalers.find("latent").name == "Latent"  # the built-ins stay


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_picture_is_served_only_while_a_queued_or_running_job_reads_it(bot: Bot) -> None:
    stored = store_init_image(png((200, 30, 30)), bot.data_dir / "uploads", 512 * 512).path
    sha = sha256_of(stored)
    url, headers = f"{bot.url}/files/pictures/{sha}", {HEADER: signature(SECRET, "pictures", sha)}
    assert (await get(url, headers))[0] == 404  # on disk, but no job reads it
    request = GenerationRequest("a fox", mode=Mode.IMG2IMG, init_image=str(stored), strength=0.5)
    job = await bot.repos.jobs.create(request, user_id=1)
    assert await get(url, headers) == (200, stored.read_bytes())
    await bot.repos.jobs.mark_running(job.id)
    assert (await get(url, headers))[0] == 200
    await bot.repos.jobs.mark_done(job.id)
    assert (await get(url, headers))[0] == 404


async def test_the_pictures_a_request_names_are_those_the_database_finds(bot: Bot) -> None:
    """The manifest lists `GenerationRequest.pictures()`; the server looks among the SQL
    query's: both must name the same fields."""
    request = GenerationRequest(
        "a fox",
        mode=Mode.INPAINT,
        init_image="/bot/init.png",
        mask_image="/bot/mask.png",
        controls=(ControlUnit("edges", "/bot/map.png"),),
        image_prompts=(ImagePrompt("/bot/style.png", style=True),),
    )
    await bot.repos.jobs.create(request, user_id=1)
    assert await bot.repos.jobs.active_pictures() == set(request.pictures())
    assert len(request.pictures()) == 4


async def test_a_worker_fetches_a_batchs_pictures_and_its_requests_read_the_copies(
    bot: Bot, tmp_path: Path
) -> None:
    init = store_init_image(png((10, 200, 10)), bot.data_dir / "uploads", 512 * 512).path
    own = tmp_path / "cli" / "my photo.png"  # a CLI job's own file, outside DATA_DIR
    own.parent.mkdir()
    own.write_bytes(png((10, 10, 200)))
    request = GenerationRequest(
        "a fox",
        mode=Mode.IMG2IMG,
        init_image=str(init),
        strength=0.5,
        controls=(ControlUnit("edges", str(own)),),
        image_prompts=(ImagePrompt(str(init)),),
    )
    await bot.repos.jobs.create(request, user_id=1)
    manifest = FileManifest({})([request])
    assert manifest == {"pictures": {str(init): sha256_of(init), str(own): sha256_of(own)}}
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    batch = Batch("b1", "w1", (ImageTask("j1", 0, request),), manifest)
    prepared = (await worker.prepare_batch(batch)).tasks[0].request
    assert prepared.init_image is not None
    init_copy, control_copy = map(Path, (prepared.init_image, prepared.controls[0].image))
    assert init_copy.is_relative_to(tmp_path / "worker")
    assert control_copy.is_relative_to(tmp_path / "worker")
    assert init_copy.read_bytes() == init.read_bytes()
    assert control_copy.read_bytes() == own.read_bytes()
    assert prepared.image_prompts[0].image == prepared.init_image  # named twice: one copy
    assert (
        replace(
            prepared,
            init_image=request.init_image,
            controls=request.controls,
            image_prompts=request.image_prompts,
        )
        == request
    )  # nothing else changed
    assert sorted(bot.requests) == sorted(
        f"/files/pictures/{sha}" for sha in manifest["pictures"].values()
    )


async def test_a_shared_folder_holds_the_bots_stored_pictures(bot: Bot, tmp_path: Path) -> None:
    init = store_init_image(png((1, 2, 3)), bot.data_dir / "uploads", 512 * 512).path
    worker = WorkerFiles(tmp_path / "worker", shared=SharedFolder(bot.data_dir))
    moved = await worker.prepare({"pictures": {"/bot/elsewhere.png": sha256_of(init)}})
    assert moved == {"/bot/elsewhere.png": str(init)}
    assert bot.requests == []


async def test_an_upscale_names_the_upscale_model_the_engine_would_use(
    bot: Bot, tmp_path: Path
) -> None:
    folder = bot.data_dir / "upscalers"
    folder.mkdir(parents=True)
    for name in ("B-second", "A-first"):
        (folder / f"{name}.safetensors").write_bytes(name.encode())
    catalog = UpscalerCatalog(folder)
    first = catalog.upscale_model()
    assert first is not None and first.name == "A-first"  # what the engine picks here
    upscale = GenerationRequest("a fox", mode=Mode.UPSCALE, strength=0.2)
    manifest = FileManifest({}, catalog)([upscale])
    assert manifest == {"upscalers": {"A-first": sha256_of(folder / "A-first.safetensors")}}
    assert FileManifest({}, catalog)([GenerationRequest("a fox")]) == {}
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    await worker.prepare(manifest)
    model = worker.upscalers.upscale_model()  # what the worker's engine picks
    assert model is not None and model.name == "A-first"
    assert model.model_file is not None and model.model_file.read_bytes() == b"A-first"


# --- names from outside: URL paths and manifests ---

HEX = "0123456789abcdef"
names_like_hashes = st.one_of(
    st.text(alphabet=HEX, min_size=64, max_size=64),
    st.text(alphabet=HEX + "ABCDEF./%\\\x00 g", min_size=0, max_size=70),
    st.text(max_size=80),
)


@given(kind=st.one_of(st.sampled_from(FILE_KINDS), st.text(max_size=20)), name=names_like_hashes)
def test_only_a_known_kind_and_64_lowercase_hex_digits_pass(kind: str, name: str) -> None:
    well_formed = kind in FILE_KINDS and len(name) == 64 and set(name) <= set(HEX)
    try:
        parsed = parse_file_ref(kind, name)
    except ValueError:
        assert not well_formed
        return
    assert well_formed and parsed == (kind, name)
    folder = Path("/cache") / kind
    assert (folder / f"{name}.safetensors").parent == folder  # no way out of the folder
    assert file_path(kind, name) == f"/files/{kind}/{name}"


async def test_the_engine_makes_the_same_image_from_a_workers_copy(
    bot: Bot, tmp_path: Path
) -> None:
    """The worker's sources stand in for the libraries: same pixels, same `Lora hashes`."""
    from pipeline.lora.cache import AdapterCache
    from pipeline.lora.source import AdapterSource
    from tests.pipeline.engine_helpers import SMALL, pixels, run, tiny_engine

    request = replace(SMALL, prompt="a fox, grainy", loras=(LoraRef("fox", 1.0, 1.0),))
    worker = WorkerFiles(tmp_path / "worker", BotFiles(bot.url, SECRET))
    grainy = sha256_of(tmp_path / "grainy.safetensors")
    await worker.prepare({"loras": {"fox": bot.lora_sha}, "embeddings": {"grainy": grainy}})
    engine = tiny_engine()
    made = []
    for loras, embeddings in (
        (bot.loras, bot.embeddings),
        (worker.sources["loras"], worker.sources["embeddings"]),
    ):
        engine.adapters = AdapterSource(loras, embeddings, AdapterCache(64 * 1024**2))
        made.append((await asyncio.to_thread(run, engine, request))[0])
    on_bot, on_worker = made
    assert (pixels(on_bot) == pixels(on_worker)).all()
    assert on_worker.parameters == on_bot.parameters
    assert (
        'Lora hashes: "fox: ' in on_bot.parameters and 'TI hashes: "grainy: ' in on_bot.parameters
    )


# --- starting the server from the settings ---


async def test_the_server_starts_from_the_settings_and_serves_signed_requests(
    bot: Bot, tmp_path: Path
) -> None:
    port = free_port()
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        queue_url="redis://127.0.0.1:6379/0",
        worker_secret=SECRET,
        worker_files_bind=f"127.0.0.1:{port}",
    )
    runner = await serve_files(bot.files, settings)
    try:
        sha = bot.lora_sha
        url = f"http://127.0.0.1:{port}/files/loras/{sha}"
        assert (await get(url, {HEADER: signature(SECRET, "loras", sha)}))[0] == 200
        with pytest.raises(UserError, match=f"WORKER_FILES_BIND=127.0.0.1:{port}: cannot listen"):
            await serve_files(bot.files, settings)  # the port is taken
    finally:
        await runner.cleanup()


async def test_a_queue_without_a_secret_does_not_start(bot: Bot, tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, queue_url="redis://127.0.0.1:6379/0")
    with pytest.raises(UserError, match="WORKER_SECRET is not"):
        await serve_files(bot.files, settings)


@pytest.mark.parametrize("bind", ["8765", "host:", ":8765", "host:99999", "host:http"])
def test_a_bind_that_is_not_host_and_port_is_refused_at_start(bind: str) -> None:
    with pytest.raises(UserError, match=f"WORKER_FILES_BIND='{bind}': .* is not host:port"):
        load_settings(None, worker_files_bind=bind)
    assert parse_bind("[::]:8765") == ("::", 8765)


def test_a_files_url_must_be_http() -> None:
    with pytest.raises(UserError, match="WORKER_FILES_URL='dreamcord:8765': give the bot's"):
        load_settings(None, worker_files_url="dreamcord:8765")
