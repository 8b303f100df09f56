"""Picture headers written by hand, byte by byte as each format's specification lays them out, so
that a file can claim any size without holding its pixels."""

from __future__ import annotations

import struct
import zlib


def png(width: int, height: int, rows: int = 0, color_type: int = 0) -> bytes:
    """A PNG (8-bit grey by default) whose IHDR claims `width`x`height`; `rows` rows of zeros are
    really compressed into its IDAT, so a bomb of any size is a few KB."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    packer = zlib.compressobj(9)
    row = bytes(1 + width * channels) if rows else b""
    body = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def gif(width: int, height: int, frames: int = 1) -> bytes:
    """GIF89a: a logical screen and `frames` image descriptors of its size, 2-colour table."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame * frames + b"\x3b"


def bmp(width: int, height: int) -> bytes:
    """A 24-bit BMP with a BITMAPINFOHEADER and no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def tiff(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one IFD declares the size, 8-bit grey, one strip."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
            (273, 4, 0), (278, 4, height), (279, 4, 0)]  # fmt: skip
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags
    )
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0"


def ico(width: int, height: int) -> bytes:
    """An ICO directory of one entry (0 means 256) pointing at a PNG of the claimed size."""
    inner = png(width, height)
    entry = struct.pack("<BBBBHHII", width % 256, height % 256, 0, 0, 1, 32, len(inner), 22)
    return struct.pack("<HHH", 0, 1, 1) + entry + inner


def psd(width: int, height: int) -> bytes:
    """A Photoshop header (version 1, 3 channels, 8 bits, RGB) and empty sections."""
    header = b"8BPS" + struct.pack(">H6sHIIHH", 1, b"", 3, height, width, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0)


HEADERS = {"png": png, "gif": gif, "bmp": bmp, "tiff": tiff, "ico": ico, "psd": psd}
"""Crafted headers by format, each taking (width, height)."""
