"""Fetch a LoRA or embedding from a URL: https only, from allowed hosts, never more than a cap.

Most LoRAs are larger than Discord's attachment limit, so admins paste a Civitai or Hugging Face
link. The file is streamed to a temp file in the destination folder (the library's, so adding
it is a rename) and the byte cap is enforced while streaming, because a Content-Length can lie
or be absent. Redirects (both sites redirect to their storage hosts) are followed by hand, at
most `MAX_REDIRECTS`, so that every hop is checked against the https rule and the host
allow-list before it is fetched: a redirect cannot reach a local or internal address. One
deadline covers the whole download, so a server that drips a byte a minute cannot hold it open.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from data.disk import reporting_full_disk
from data.files import TEMP_PREFIX  # so the library's sweep also takes abandoned downloads
from pipeline.errors import UserError

DEFAULT_HOSTS = (
    "civitai.com",
    "huggingface.co",
    "hf.co",
    "r2.cloudflarestorage.com",
    "backblazeb2.com",
)
"""Allowed hosts, each with its subdomains: the sites, and the storage hosts their download
links redirect to (Hugging Face's `cdn-lfs*.hf.co` and `cas-bridge.xethub.hf.co`; Civitai's
Cloudflare R2 and Backblaze B2 buckets). DOWNLOAD_HOSTS replaces the list."""
DEFAULT_DEADLINE_S = 600.0
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)

Progress = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None when the server did not say)."""


@dataclass(frozen=True)
class Downloaded:
    """A finished download: the temp file (the caller's to move or delete) and the name the
    server gave the file."""

    path: Path
    filename: str
    size: int


async def download(
    url: str,
    dest_dir: Path,
    *,
    max_bytes: int,
    allowed_hosts: Collection[str] = DEFAULT_HOSTS,
    on_progress: Progress | None = None,
    require_https: bool = True,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> Downloaded:
    """Stream `url` into a temp file in `dest_dir` within `deadline_s` seconds in all;
    UserError says what went wrong, and no partial file is left.

    `require_https=False` exists only so that tests can serve files from a local http server;
    every real caller keeps the default.
    """
    check_url(url, allowed_hosts, require_https)
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
    deadline = asyncio.timeout(deadline_s)
    try:
        async with deadline, aiohttp.ClientSession(timeout=TIMEOUT) as session:
            response = await _follow(session, url, allowed_hosts, require_https)
            async with response:
                return await _save(response, url, dest_dir, max_bytes, on_progress)
    except TimeoutError:
        if not deadline.expired():
            raise UserError(
                f"could not download {_shown(url)}: the server stopped answering; try again later"
            ) from None
        raise UserError(
            f"the download of {_shown(url)} took longer than {deadline_s:g} s, the limit "
            "(DOWNLOAD_TIMEOUT_S): try again later, or download the file and add it from disk"
        ) from None
    except aiohttp.ClientError as error:
        reason = str(error) or type(error).__name__
        raise UserError(f"could not download {_shown(url)}: {reason}; try again later") from None


def check_url(url: str, allowed_hosts: Collection[str], require_https: bool = True) -> None:
    """Refuse other schemes than https (and http where allowed) and hosts off the list."""
    parts = urlsplit(url)
    schemes = ("https",) if require_https else ("https", "http")
    if parts.scheme not in schemes:
        raise UserError(
            f"{_shown(url)} is not an https:// link: give the https address of the file"
        )
    host = (parts.hostname or "").lower()
    if not any(host == allowed or host.endswith("." + allowed) for allowed in allowed_hosts):
        raise UserError(
            f"downloads from {host or 'that address'} are not allowed; allowed are "
            f"{', '.join(allowed_hosts)}: download the file and add it from disk instead"
        )


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    allowed_hosts: Collection[str],
    require_https: bool,
) -> aiohttp.ClientResponse:
    """GET `url`, following redirects one by one, each hop checked as the link itself was."""
    for _ in range(MAX_REDIRECTS + 1):
        response = await session.get(url, allow_redirects=False)
        if response.status not in (301, 302, 303, 307, 308):
            _check_status(response, url)
            return response
        location = response.headers.get("Location", "")
        response.release()
        url = urljoin(url, location)
        try:
            check_url(url, allowed_hosts, require_https)
        except UserError as refusal:
            raise UserError(f"the download was redirected: {refusal}") from None
    raise UserError(f"the download redirected more than {MAX_REDIRECTS} times: check the link")


def _check_status(response: aiohttp.ClientResponse, url: str) -> None:
    if response.status < 400:
        return
    response.release()
    shown = _shown(url)
    if response.status in (401, 403):
        raise UserError(
            f"{shown} refused access (HTTP {response.status}): the file may need a login; on "
            "Civitai add your API key to the link as ?token=..."
        )
    if response.status == 404:
        raise UserError(f"nothing was found at {shown} (HTTP 404): check the link")
    raise UserError(f"{shown} answered HTTP {response.status} {response.reason}: try again later")


async def _save(
    response: aiohttp.ClientResponse,
    url: str,
    dest_dir: Path,
    max_bytes: int,
    on_progress: Progress | None,
) -> Downloaded:
    """Stream the body to a temp file, enforcing `max_bytes`; the temp is removed on failure."""
    total = response.content_length
    if total is not None and total > max_bytes:
        raise UserError(_too_large(total, max_bytes))
    fd, name = await asyncio.to_thread(
        tempfile.mkstemp, dir=dest_dir, prefix=TEMP_PREFIX, suffix=".part"
    )
    temp = Path(name)
    size = 0
    try:
        with reporting_full_disk(dest_dir), os.fdopen(fd, "wb") as file:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise UserError(_too_large(size, max_bytes))
                await asyncio.to_thread(file.write, chunk)
                if on_progress is not None:
                    on_progress(size, total)
            await asyncio.to_thread(os.fsync, file.fileno())
    except BaseException:  # a body cut short is aiohttp's ClientPayloadError, caught above
        await asyncio.to_thread(temp.unlink, missing_ok=True)
        raise
    return Downloaded(temp, _filename(response, url), size)


def _filename(response: aiohttp.ClientResponse, url: str) -> str:
    """The file's own name: the server's Content-Disposition, else the URL's last segment.

    Civitai links end in a model id; only the header holds the real name. It is untrusted text:
    the library keeps only a safe base name of it.
    """
    disposition = response.content_disposition
    given = disposition.filename if disposition else None
    return given or unquote(urlsplit(url).path).rsplit("/", 1)[-1] or "download"


def _too_large(size: int, max_bytes: int) -> str:
    return (
        f"the file is larger than the download limit of {max_bytes / 1024**2:,.0f} MiB (at "
        f"least {size / 1024**2:,.0f} MiB): check that the link is a LoRA or embedding, "
        "not a checkpoint"
    )


def _shown(url: str) -> str:
    """The URL without its query (which may hold an API token), cut short for messages."""
    parts = urlsplit(url)
    shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return shown if len(shown) <= 120 else shown[:117] + "..."
