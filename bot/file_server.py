"""The bot's file server for remote workers: `GET /files/<kind>/<sha256>`, signed by the secret.

Started by the container when QUEUE_URL is set, on WORKER_FILES_BIND. A request without the
right signature (`bot.worker_files.sign`) is refused with 401 and logged; a malformed name or a
hash the libraries (or the pictures of queued and running jobs) do not hold is a 404. Files
stream from disk; nothing is read into memory.
"""

from __future__ import annotations

import logging

from aiohttp import web

from bot.settings import Settings
from bot.worker_files import SIGNATURE_HEADER, LibraryFiles, parse_file_ref, signature_ok
from pipeline.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765


def parse_bind(text: str) -> tuple[str, int]:
    """WORKER_FILES_BIND's `host:port` (`[::]:8765` for IPv6); ValueError when it is not one."""
    host, colon, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port, such as 0.0.0.0:{DEFAULT_PORT}")
    return host, int(port)


def file_app(files: LibraryFiles, secret: str) -> web.Application:
    """The web app serving `files` to workers that sign with `secret`."""

    async def serve(request: web.Request) -> web.StreamResponse:
        kind, sha256 = request.match_info["kind"], request.match_info["sha256"]
        if not signature_ok(secret, kind, sha256, request.headers.get(SIGNATURE_HEADER)):
            log.warning(
                "refused a file request from %s: wrong or missing signature (check that "
                "WORKER_SECRET is the same on the bot and the workers)",
                request.remote,
            )
            raise web.HTTPUnauthorized(text="wrong or missing signature\n")
        try:
            parse_file_ref(kind, sha256)
        except ValueError:
            raise web.HTTPNotFound() from None
        path = await files.find(kind, sha256)
        if path is None:
            raise web.HTTPNotFound(text=f"no {kind} file {sha256}\n")
        return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/files/{kind}/{sha256}", serve)
    return app


async def serve_files(files: LibraryFiles, settings: Settings) -> web.AppRunner:
    """Start the file server on WORKER_FILES_BIND; the caller cleans the runner up on shutdown."""
    if settings.worker_secret is None:
        raise UserError(
            "QUEUE_URL is set but WORKER_SECRET is not: set the same long random WORKER_SECRET "
            "on the bot and its workers (python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    secret = settings.worker_secret.get_secret_value()
    host, port = parse_bind(settings.worker_files_bind)
    runner = web.AppRunner(file_app(files, secret), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise UserError(
            f"WORKER_FILES_BIND={settings.worker_files_bind}: cannot listen there "
            f"({error.strerror}): choose a free port or another address"
        ) from None
    log.info("library files for workers on http://%s:%s/files/", host, port)
    return runner
