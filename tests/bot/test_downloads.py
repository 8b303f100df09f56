"""Downloads: https only, allowed hosts only, a byte cap while streaming, nothing left on failure.

A local aiohttp server on 127.0.0.1 serves the files over http, so these tests pass
`require_https=False`; the https rule itself is tested without a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.downloads import MAX_REDIRECTS, check_url, download
from pipeline.errors import UserError

BODY = bytes(range(256)) * 40  # 10 KiB
LOCAL = ("127.0.0.1",)
SERVED: list[web.Application] = []
"""The apps the `server` fixture started, so tests can read what they were asked for."""


async def whole(_: web.Request) -> web.Response:
    return web.Response(
        body=BODY, headers={"Content-Disposition": 'attachment; filename="fox-style.safetensors"'}
    )


async def streamed(request: web.Request) -> web.StreamResponse:
    """A body without Content-Length, so only the streaming cap can stop it."""
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(10):
        await response.write(BODY)
    return response


async def redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/files/whole")


async def forbidden(_: web.Request) -> web.Response:
    raise web.HTTPForbidden()


async def drip(request: web.Request) -> web.StreamResponse:
    """One byte at a time, each soon enough to keep the socket's read timeout from firing."""
    response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
    await response.prepare(request)
    for byte in BODY:
        await response.write(bytes([byte]))
        await asyncio.sleep(0.02)  # the slow server under test, not a wait in the test
    return response


async def elsewhere(request: web.Request) -> web.Response:
    """To the same server under another name, which the allow-list does not hold."""
    raise web.HTTPFound(f"http://localhost:{request.url.port}/files/counted")


async def counted(request: web.Request) -> web.Response:
    request.app[HITS] += 1
    return web.Response(body=BODY)


async def loop(request: web.Request) -> web.Response:
    request.app[HITS] += 1
    raise web.HTTPFound("/files/loop")


HITS = web.AppKey("hits", int)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/files/whole", whole)
    app.router.add_get("/files/streamed", streamed)
    app.router.add_get("/files/redirect", redirect)
    app.router.add_get("/files/forbidden", forbidden)
    app.router.add_get("/files/drip", drip)
    app.router.add_get("/files/elsewhere", elsewhere)
    app.router.add_get("/files/counted", counted)
    app.router.add_get("/files/loop", loop)
    app[HITS] = 0
    SERVED.append(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/files"
    await runner.cleanup()


async def fetch(url: str, dest: Path, max_bytes: int = 1 << 20, **options):
    return await download(
        url, dest, max_bytes=max_bytes, allowed_hosts=LOCAL, require_https=False, **options
    )


async def test_a_file_is_streamed_to_a_temp_file_with_progress(server, tmp_path) -> None:
    seen: list[tuple[int, int | None]] = []
    done = await fetch(f"{server}/redirect", tmp_path, on_progress=lambda *a: seen.append(a))
    assert done.path.parent == tmp_path and done.path.read_bytes() == BODY
    assert (done.filename, done.size) == ("fox-style.safetensors", len(BODY))
    assert seen[-1] == (len(BODY), len(BODY))


@pytest.mark.parametrize("path", ["whole", "streamed"])
async def test_the_byte_cap_holds_with_or_without_content_length(server, tmp_path, path) -> None:
    with pytest.raises(UserError, match="larger than the download limit"):
        await fetch(f"{server}/{path}", tmp_path, max_bytes=len(BODY) - 1)
    assert list(tmp_path.iterdir()) == []


async def test_http_errors_become_clear_messages(server, tmp_path) -> None:
    with pytest.raises(UserError, match=r"refused access \(HTTP 403\)"):
        await fetch(f"{server}/forbidden", tmp_path)
    with pytest.raises(UserError, match=r"nothing was found at .* \(HTTP 404\)"):
        await fetch(f"{server}/missing", tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_slow_drip_ends_at_the_deadline_and_leaves_no_file(server, tmp_path) -> None:
    with pytest.raises(UserError, match=r"took longer than 0.3 s.*DOWNLOAD_TIMEOUT_S"):
        await fetch(f"{server}/drip", tmp_path, deadline_s=0.3)
    assert list(tmp_path.iterdir()) == []


async def test_a_redirect_to_a_host_off_the_list_is_not_followed(server, tmp_path) -> None:
    with pytest.raises(UserError, match="redirected: downloads from localhost are not allowed"):
        await fetch(f"{server}/elsewhere", tmp_path)
    assert SERVED[-1][HITS] == 0
    assert list(tmp_path.iterdir()) == []


async def test_a_redirect_loop_ends_after_the_hop_limit(server, tmp_path) -> None:
    with pytest.raises(UserError, match=f"redirected more than {MAX_REDIRECTS} times"):
        await fetch(f"{server}/loop", tmp_path)
    assert SERVED[-1][HITS] == MAX_REDIRECTS + 1


async def test_a_closed_port_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="could not download"):
        await fetch("http://127.0.0.1:9/x.safetensors", tmp_path)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://civitai.com/api/download/models/1", "not an https:// link"),
        ("ftp://huggingface.co/x.safetensors", "not an https:// link"),
        ("file:///etc/passwd", "not an https:// link"),
        ("https://example.com/x.safetensors", "downloads from example.com are not allowed"),
        ("https://civitai.com.evil.net/x", "not allowed"),
    ],
)
def test_only_https_links_to_allowed_hosts_pass(url, message) -> None:
    with pytest.raises(UserError, match=message):
        check_url(url, ("civitai.com", "huggingface.co"))


def test_allowed_hosts_include_their_subdomains() -> None:
    check_url("https://cdn-lfs.huggingface.co/x", ("huggingface.co",))
    check_url("https://civitai.com/api/download/models/1?token=secret", ("civitai.com",))
