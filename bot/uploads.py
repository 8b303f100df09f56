"""Pictures users bring for image to image: checked, converted to PNG and kept on disk.

Upload links expire, so the picture is stored at once, content-addressed like results. Its
format, frame count and declared size are checked right after `Image.open`, which reads only the
header, and before `load`, which decodes: a few KB can declare billions of pixels.

A stored picture is held while the request that uses it is composed and queued; once released it
stays only if a job refers to it, so a refused request leaves nothing behind. The start-up sweep
removes the pictures of any request that a crash cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data.images import ImageStore
from data.jobs import JobRepository
from pipeline.errors import UserError
from pipeline.sizes import fit_size

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SIDE = 4096
MIN_SIDE = 64
FORMATS = ("PNG", "JPEG", "WEBP")
MULTI_PICTURE_JPEG = "MPO"
"""Pillow's name for a JPEG that carries more pictures (a depth map, a preview), as many phones
write photos: accepted as a JPEG, its first picture being the photo."""
UPLOADS_FOLDER = "uploads"
"""Under DATA_DIR."""
UNREADABLE = "that file is not a picture Dreamcord can read: send a PNG, JPEG or WebP"
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError)
"""What Pillow's plugins raise on a broken file (OSError includes UnidentifiedImageError)."""


@dataclass(frozen=True)
class InitImage:
    """A stored picture and the generation size that keeps its aspect within the pixel limit."""

    path: Path
    width: int
    height: int


def check_picture_size(size: int) -> None:
    """Refuse a picture by its size, before it is downloaded when the size is known first."""
    if size > MAX_UPLOAD_BYTES:
        raise UserError(
            f"the picture is {size / 2**20:.1f} MiB; the most is "
            f"{MAX_UPLOAD_BYTES // 2**20} MiB: send a smaller one"
        )


def store_init_image(data: bytes, folder: Path, max_pixels: int) -> InitImage:
    """Check and keep an uploaded picture under `folder` (blocking: call it in a thread)."""
    return store_picture(decode_picture(data), folder, max_pixels)


def store_picture(picture: Image.Image, folder: Path, max_pixels: int) -> InitImage:
    """Keep a decoded picture (an upload, a control map made of one) under `folder` as PNG
    (blocking: call it in a thread)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    store = ImageStore(folder)
    stored = store.put(buffer.getvalue())
    width, height = fit_size(picture.width, picture.height, max_pixels)
    return InitImage(store.path_of(stored.path), width, height)


def decode_picture(data: bytes, keep_alpha: bool = False) -> Image.Image:
    """The picture as RGB (RGBA with `keep_alpha`, for a mask painted on a transparent layer),
    decoded only once its size and header passed the checks (blocking: call it in a thread)."""
    check_picture_size(len(data))
    try:
        with warnings.catch_warnings():
            # Pillow warns of bombs and corrupt tags, which the checks here refuse or survive.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                _check_header(image)
                image.load()
                return image.convert("RGBA" if keep_alpha else "RGB")
    except Image.DecompressionBombError:
        raise UserError(
            f"the picture declares more pixels than can be opened safely: send one of at most "
            f"{MAX_SIDE}x{MAX_SIDE} pixels"
        ) from None
    except DECODE_ERRORS:
        raise UserError(UNREADABLE) from None


def _check_header(image: Image.Image) -> None:
    """Refuse by what the header declares: format, animation, sides."""
    if image.format == MULTI_PICTURE_JPEG:
        image.seek(0)
    elif image.format not in FORMATS:
        raise UserError(f"{image.format} pictures are not accepted: send a PNG, JPEG or WebP")
    elif getattr(image, "n_frames", 1) > 1:
        raise UserError("animated pictures are not accepted: send one still PNG, JPEG or WebP")
    width, height = image.size
    if max(width, height) > MAX_SIDE or min(width, height) < MIN_SIDE:
        raise UserError(
            f"the picture is {width}x{height}; sides must be {MIN_SIDE} to {MAX_SIDE} pixels"
        )


class Uploads:
    """The uploads folder: pictures kept for the jobs that start from them, and only for those."""

    def __init__(self, folder: Path, jobs: JobRepository, max_pixels: int) -> None:
        self.folder = folder
        self._jobs = jobs
        self._max_pixels = max_pixels
        self._holds: Counter[Path] = Counter()

    @contextlib.asynccontextmanager
    async def held(self, data: bytes | None) -> AsyncIterator[InitImage | None]:
        """Store `data` for the request being built in the block; when the block ends, the file
        is removed unless a job refers to it now (or another request still holds it)."""
        if data is None:
            yield None
            return
        init = await asyncio.to_thread(store_init_image, data, self.folder, self._max_pixels)
        async with self._holding(init):
            yield init

    @contextlib.asynccontextmanager
    async def held_picture(self, picture: Image.Image) -> AsyncIterator[InitImage]:
        """`held` for a picture Dreamcord made itself (a control map), already decoded."""
        init = await asyncio.to_thread(store_picture, picture, self.folder, self._max_pixels)
        async with self._holding(init):
            yield init

    @contextlib.asynccontextmanager
    async def _holding(self, init: InitImage) -> AsyncIterator[None]:
        self._holds[init.path] += 1
        try:
            yield
        finally:
            self._holds[init.path] -= 1
            if self._holds[init.path] <= 0:
                del self._holds[init.path]
                if not await self._jobs.uses_init_image(str(init.path)):
                    await asyncio.to_thread(init.path.unlink, missing_ok=True)


async def sweep_uploads(folder: Path, jobs: JobRepository) -> int:
    """Remove the pictures no job refers to (their requests were refused or cut short by a
    crash), as `ImageStore.orphan_sweep` does for images; returns how many went."""
    kept = []
    for stored in await jobs.init_images():
        with contextlib.suppress(ValueError):  # a CLI job's own file, outside the folder
            kept.append(Path(stored).relative_to(folder).as_posix())
    return await asyncio.to_thread(ImageStore(folder).orphan_sweep, kept)
