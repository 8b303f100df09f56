"""Training pictures and zips written by the tests themselves, so no binary lives in the repo."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

from PIL import Image


def picture(width: int = 256, height: int = 256, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A picture with a smooth pattern that depends on `seed`, encoded as `fmt`."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x * 3 + seed * 40) % 256, (y * 2 + seed * 70) % 256, (x + y + seed * 20) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def write_folder(root: Path, files: Mapping[str, bytes | str]) -> Path:
    """Write `files` (relative name -> bytes or text) under `root`."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    return root


def write_zip(
    path: Path, files: Mapping[str, bytes | str], method: int = zipfile.ZIP_DEFLATED
) -> Path:
    """A zip of `files`, with each name exactly as given (so a test can write `../x`)."""
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=method)
    return path


def training_set(count: int = 8, size: int = 256) -> dict[str, bytes | str]:
    """`count` distinct pictures in kohya's `2_fox/` folder, each with a caption file."""
    files: dict[str, bytes | str] = {}
    for index in range(count):
        files[f"2_fox/{index:02}.png"] = picture(size, size, seed=index)
        files[f"2_fox/{index:02}.txt"] = f"fox, {'snow' if index % 2 else 'grass'}, photo"
    return files
