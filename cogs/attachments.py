"""Pictures users attach to a command: downloaded at once, since attachment links expire."""

from __future__ import annotations

import discord

from pipeline.errors import UserError


async def read_picture(image: discord.Attachment) -> bytes:
    """The attachment's bytes now, or a UserError that asks for it again."""
    try:
        return await image.read()
    except discord.HTTPException:
        raise UserError("Discord did not hand over the picture: attach it again") from None
