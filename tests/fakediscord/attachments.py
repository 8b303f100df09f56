"""Attachments: files stored behind CDN urls, and Discord's rules for a message's attachment list.

On Discord an edit's ``attachments`` lists what stays (old ids) and what is new (``files[n]``
indexes); files not listed are dropped. Bots get this wrong in ways only a faithful fake shows
(an edit that silently loses the grid), so the rules are Discord's, not "replace everything".
"""

from __future__ import annotations

import mimetypes
import struct

from aiohttp import web

from . import payloads
from .errors import INVALID_FORM_BODY, DiscordError
from .payloads import Payload, SnowflakeFactory
from .records import StoredMessage, UploadedFile

CDN_ROUTE = "/cdn/attachments/{channel_id}/{attachment_id}/{filename}"


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG header, as Discord reports them for images."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


class Cdn:
    """Attachment bytes by id, served at the urls the fake hands out."""

    def __init__(self, new_id: SnowflakeFactory) -> None:
        self.new_id = new_id
        self.base_url = ""  # known once the server listens
        self._files: dict[str, tuple[bytes, str]] = {}

    def store(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        description: str | None = None,
    ) -> Payload:
        """Keep the bytes and return the attachment payload pointing at them."""
        attachment_id = self.new_id()
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        url = f"{self.base_url}/cdn/attachments/{channel_id}/{attachment_id}/{filename}"
        size = png_size(data)
        self._files[str(attachment_id)] = (data, content_type)
        return payloads.attachment(
            attachment_id,
            filename,
            size=len(data),
            url=url,
            content_type=content_type,
            width=size[0] if size else None,
            height=size[1] if size else None,
            description=description,
        )

    def bytes_at(self, url: str) -> bytes:
        """Bytes behind a CDN url the fake handed out."""
        attachment_id = url.split("/cdn/attachments/", 1)[1].split("/")[1]
        return self._files[attachment_id][0]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(CDN_ROUTE, self._get)

    async def _get(self, request: web.Request) -> web.Response:
        try:
            data, content_type = self._files[request.match_info["attachment_id"]]
        except KeyError:
            return web.Response(status=404, text="asset not found")
        return web.Response(body=data, headers={"Content-Type": content_type})

    def apply(self, stored: StoredMessage, body: Payload, files: list[UploadedFile]) -> None:
        """Set a message's attachments from a create or edit body and its uploaded files."""
        existing = {a["id"]: a for a in stored.payload["attachments"]}
        by_index = {f.index: f for f in files}
        used: set[int | None] = set()
        if "attachments" in body:
            result = []
            for entry in body["attachments"] or []:
                entry_id = str(entry.get("id"))
                if entry_id in existing:
                    result.append(existing[entry_id])
                    continue
                upload = by_index.get(int(entry_id)) if entry_id.isdigit() else None
                if upload is None:
                    raise DiscordError(400, INVALID_FORM_BODY, f"Unknown attachment {entry_id}")
                used.add(upload.index)
                result.append(
                    self._attach(stored, upload, entry.get("filename"), entry.get("description"))
                )
        else:
            result = list(existing.values())
        result += [self._attach(stored, f) for f in files if f.index not in used]
        stored.payload["attachments"] = result
        kept = {a["id"] for a in result}
        stored.files = {k: v for k, v in stored.files.items() if k in kept}

    def _attach(
        self,
        stored: StoredMessage,
        upload: UploadedFile,
        filename: str | None = None,
        description: str | None = None,
    ) -> Payload:
        attachment = self.store(
            stored.channel_id,
            filename or upload.filename,
            upload.data,
            upload.content_type,
            description,
        )
        stored.files[attachment["id"]] = upload.data
        return attachment
