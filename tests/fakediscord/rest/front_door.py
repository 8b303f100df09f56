"""The REST front door: every ``/api/v10`` request is parsed, recorded, rate limited or
authenticated, and answered the way discord.py expects to read it.

discord.py parses a body as JSON only when ``Content-Type`` is exactly ``application/json``, and
files arrive as multipart with ``payload_json`` and ``files[n]``; both rules live here so the
resource handlers only read ``request[BODY]`` and ``request[FILES]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import payloads
from ..errors import REQUEST_TOO_LARGE, UNAUTHORIZED, DiscordError
from ..ratelimits import RateLimits
from ..records import RecordedRequest, UploadedFile

API_PREFIX = "/api/v10"

# Parsed request bodies, stored on the request by the middleware for the handlers.
BODY = web.RequestKey("fakediscord_body", Any)
FILES = web.RequestKey("fakediscord_files", list[UploadedFile])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # Exactly "application/json": discord.py parses nothing else (no charset suffix).
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


async def no_content(request: web.Request) -> web.Response:
    """204 for the calls a bot makes but whose effect no test looks at (typing, reactions)."""
    return web.Response(status=204)


async def read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    """The JSON body (``payload_json`` of a multipart request) and the uploaded files."""
    if not request.can_read_body:
        return None, []
    if request.content_type.startswith("multipart/"):
        body: Any = None
        files: list[UploadedFile] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            data = await part.read()  # type: ignore[union-attr]
            if part.name == "payload_json":
                body = json.loads(data)
            else:
                files.append(
                    UploadedFile(
                        part.name or "",
                        part.filename or "file",
                        part.headers.get("Content-Type", "application/octet-stream"),
                        bytes(data),
                    )
                )
        return body, files
    raw = await request.read()
    if not raw:
        return None, []
    try:
        return json.loads(raw), []
    except ValueError:
        return raw.decode(errors="replace"), []


class RestFrontDoor:
    """The aiohttp middleware for the API; ``requests`` is every request in arrival order.

    ``upload_limit`` is the largest file Discord accepts (interactions carry it as
    ``attachment_size_limit``); a bigger one is answered 413 / 40005, as Discord does.
    """

    def __init__(self, token: str, rate_limits: RateLimits, notify: Callable[[], None]) -> None:
        self.upload_limit = payloads.DEFAULT_ATTACHMENT_SIZE_LIMIT
        self.token = token
        self.rate_limits = rate_limits
        self.requests: list[RecordedRequest] = []
        self._notify = notify

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path[len(API_PREFIX) :]
        resource = request.match_info.route.resource
        route = resource.canonical[len(API_PREFIX) :] if resource is not None else path
        body, files = await read_body(request)
        record = RecordedRequest(
            request.method,
            path,
            route,
            dict(request.query),
            body,
            files,
            asyncio.get_running_loop().time(),
        )
        request[BODY], request[FILES] = body, files
        self.requests.append(record)
        try:
            response = await self._answer(request, handler, record, route)
        except DiscordError as exc:
            response = json_response(payloads.error(exc.code, exc.message), exc.status)
        record.status = response.status
        self._notify()
        return response

    async def _answer(
        self, request: web.Request, handler: Handler, record: RecordedRequest, route: str
    ) -> web.StreamResponse:
        bucket = self.rate_limits.bucket(request.method, route)
        limited = self.rate_limits.limit(record, bucket)
        if limited is not None:
            body, headers = limited
            return json_response(body, 429, headers)
        self._check_auth(request, record.path)
        if any(len(file.data) > self.upload_limit for file in record.files):
            raise DiscordError(413, REQUEST_TOO_LARGE, "Request entity too large")
        response = await handler(request)
        response.headers.update(self.rate_limits.allowed_headers(bucket))
        return response

    def _check_auth(self, request: web.Request, path: str) -> None:
        # Interaction callbacks and webhook calls authenticate by the token in the URL.
        if path.startswith(("/interactions/", "/webhooks/")):
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, UNAUTHORIZED, "401: Unauthorized")
