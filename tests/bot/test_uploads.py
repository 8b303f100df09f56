"""Pictures for image to image: checked, stored as PNG, sized within the pixel limit."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.uploads import store_init_image, sweep_uploads
from data.db import Database
from data.repositories import Repositories
from pipeline.errors import UserError
from pipeline.request import GenerationRequest, Mode
from pipeline.sizes import fit_size
from tests.bot import picture_files


def encoded(size: tuple[int, int], kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, format=kind)
    return buffer.getvalue()


def test_a_jpeg_is_kept_as_png_and_sized_within_the_limit(tmp_path: Path) -> None:
    stored = store_init_image(encoded((1200, 800), "JPEG"), tmp_path, 512 * 512)
    assert stored.path.is_file() and stored.path.is_relative_to(tmp_path)
    assert Image.open(stored.path).format == "PNG"
    assert stored.width * stored.height <= 512 * 512
    assert stored.width % 8 == 0 and stored.height % 8 == 0
    assert abs(stored.width / stored.height - 1.5) < 0.05


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"GIF89a not really", "not a picture Dreamcord can read"),
        (encoded((64, 64), "GIF"), "GIF pictures are not accepted"),
        (encoded((32, 200), "PNG"), "sides must be 64 to 4096"),
        (b"\x89PNG" + b"0" * (21 * 2**20), "the most is 20 MiB"),
    ],
)
def test_bad_pictures_are_refused_with_the_reason(tmp_path: Path, data: bytes, says: str) -> None:
    with pytest.raises(UserError, match=says):
        store_init_image(data, tmp_path, 512 * 512)
    assert not any(tmp_path.rglob("*.png"))


@pytest.mark.parametrize(
    ("size", "limit"), [((512, 512), 512 * 512), ((3000, 1000), 512 * 512), ((100, 60), 10**6)]
)
def test_fit_size_keeps_within_the_limit_in_multiples_of_8(size, limit: int) -> None:
    width, height = fit_size(*size, limit)
    assert width * height <= limit
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - size[0] / size[1]) < 0.15


def test_a_picture_of_a_declared_size_past_the_limit_is_refused_before_it_is_decoded(
    tmp_path: Path,
) -> None:
    """A 9000x9000 grey PNG of zeros: about 80 KB on disk, 81 MB decoded, 243 MB as RGB.

    Run in a child process so that its peak memory is its own to measure.
    """
    bomb = picture_files.png(9000, 9000, rows=9000)
    assert len(bomb) < 200_000
    child = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from bot.uploads import store_init_image
        from pipeline.errors import UserError
        try:
            store_init_image(sys.stdin.buffer.read(), Path({str(tmp_path)!r}), 512 * 512)
        except UserError as refusal:
            print("refused:", refusal)
        # VmHWM: this program's own peak; ru_maxrss would keep the forking parent's.
        status = Path("/proc/self/status").read_text()
        print(next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM")) // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], input=bomb, capture_output=True, check=True
    )
    *lines, peak_mib = done.stdout.decode().splitlines()
    assert lines and "sides must be 64 to 4096" in lines[0], done.stdout
    assert int(peak_mib) < 150  # the pixels alone would take 81 MB, their RGB copy 243 MB
    assert not any(tmp_path.rglob("*.png"))


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (picture_files.png(40_000, 40_000), "more pixels than can be opened safely"),
        (picture_files.gif(64, 64, frames=3), "GIF pictures are not accepted"),
        (picture_files.psd(100, 100), "PSD pictures are not accepted"),
    ],
)
def test_bombs_and_other_formats_are_refused_before_decoding(
    tmp_path: Path, data: bytes, says: str
) -> None:
    with pytest.raises(UserError, match=says):
        store_init_image(data, tmp_path, 512 * 512)


def test_a_phone_photo_with_a_depth_map_is_taken_as_its_first_picture(tmp_path: Path) -> None:
    """Many phones write JPEGs with more pictures in them (MPO); the first is the photo."""
    photo, depth = Image.new("RGB", (160, 96), "orange"), Image.new("RGB", (80, 48), "grey")
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[depth])
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    stored = store_init_image(buffer.getvalue(), tmp_path, 512 * 512)
    assert Image.open(stored.path).size == (160, 96)


def test_an_animated_picture_is_refused(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(UserError, match="animated"):
        store_init_image(buffer.getvalue(), tmp_path, 512 * 512)


async def test_the_sweep_removes_uploads_no_job_starts_from(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    used = store_init_image(encoded((96, 96), "PNG"), folder, 512 * 512)
    orphan = store_init_image(encoded((128, 96), "PNG"), folder, 512 * 512)
    long_ago = time.time() - 2 * 3600  # past the age under which a file may be mid-request
    for path in (used.path, orphan.path):
        os.utime(path, (long_ago, long_ago))
    db = await Database.open(tmp_path / "dreamcord.db")
    try:
        jobs = Repositories.over(db).jobs
        request = GenerationRequest(prompt="a fox", init_image=str(used.path), mode=Mode.IMG2IMG)
        await jobs.create(request, user_id=1)
        assert await sweep_uploads(folder, jobs) == 1
    finally:
        await db.close()
    assert used.path.exists() and not orphan.path.exists()
