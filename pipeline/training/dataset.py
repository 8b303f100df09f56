"""A training set from a folder or a zip: checked pictures, their captions and kohya's repeats.

Pictures come from users, so a zip is treated as hostile: its members are checked by name, count,
declared size and compression ratio before one byte is written, and extraction counts the bytes
really inflated, so a header that lies cannot fill the disk. A refusal removes what was written.
Captions follow the A1111/kohya convention (`NAME.txt` or `NAME.caption` beside `NAME.png`), and
a folder named `10_fox` repeats its pictures ten times per epoch, as kohya's sd-scripts reads it.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIXES = (".txt", ".caption")
_REPEATS_FOLDER = re.compile(r"^(\d+)_(.+)$")
_SKIPPED_PARTS = ("__MACOSX",)
"""Folders zip tools add that hold no pictures (macOS resource forks)."""
_CHUNK = 1 << 16
_SHOWN = 5
"""How many offending files a message names before it says how many more there are."""


@dataclass(frozen=True)
class DatasetLimits:
    """What a training set may hold; the defaults suit a LoRA of a few dozen pictures."""

    max_images: int = 200
    min_side: int = 256
    max_pixels: int = 40_000_000
    """Per picture: more is a decompression bomb or a scan, not a training picture."""
    max_members: int = 2_000
    max_total_bytes: int = 1024**3
    max_ratio: float = 100.0
    """Uncompressed over compressed size of a member; pictures barely compress, bombs do."""
    max_caption_bytes: int = 16_384


@dataclass(frozen=True)
class TrainingImage:
    """One picture: its caption ("" when it has no caption file) and kohya repeats (None when its
    folder does not say: the plan chooses)."""

    path: Path
    caption: str
    width: int
    height: int
    repeats: int | None = None

    @property
    def folder(self) -> str:
        """The folder name sd-scripts groups tag counts by (`10_fox`)."""
        return self.path.parent.name


@dataclass(frozen=True)
class Dataset:
    """Checked pictures in a stable order, and the tags of their captions per folder (sd-scripts'
    `ss_tag_frequency` shape: folder -> tag -> count)."""

    images: tuple[TrainingImage, ...]
    tag_counts: Mapping[str, Mapping[str, int]]


def split_tags(caption: str) -> list[str]:
    """A caption's comma-separated tags, stripped, empty ones dropped (as sd-scripts splits)."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def open_dataset(source: Path, into: Path, limits: DatasetLimits = DatasetLimits()) -> Dataset:
    """Read a training set from a folder, or from a zip extracted into the new folder `into`.

    A refused zip leaves `into` absent; a folder source leaves `into` untouched.
    """
    if source.is_dir():
        return _read_folder(source, limits)
    if not source.is_file():
        raise UserError(f"{source.name} does not exist: give a folder of pictures or a .zip")
    if not zipfile.is_zipfile(source):
        raise UserError(f"{source.name} is not a zip file: give a folder of pictures or a .zip")
    if into.exists():
        raise UserError(f"{into} already exists: remove it or extract somewhere else")
    try:
        extract_zip(source, into, limits)
        return _read_folder(into, limits)
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise


def extract_zip(source: Path, into: Path, limits: DatasetLimits) -> None:
    """Extract the pictures and captions of a zip after checking every member."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = _checked_members(archive.infolist(), limits)
            into.mkdir(parents=True)
            written = 0
            for member, relative in members:
                target = into.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                written = _inflate(archive, member, target, written, limits)
    except zipfile.BadZipFile as error:
        raise UserError(f"{source.name} is a damaged zip ({error}): make it again") from None
    except (NotImplementedError, RuntimeError) as error:  # unknown method, encrypted member
        raise UserError(
            f"{source.name} cannot be read ({error}): zip it again without a password, "
            "with the usual deflate compression"
        ) from None


def _checked_members(
    infos: Iterable[zipfile.ZipInfo], limits: DatasetLimits
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members worth extracting, once the whole archive passed the rules."""
    infos = list(infos)
    if len(infos) > limits.max_members:
        raise UserError(
            f"the zip has {len(infos)} entries, more than the {limits.max_members} allowed: "
            "keep only the pictures and their captions"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise UserError(
            f"the zip would unpack to {_mib(total)}, more than the {_mib(limits.max_total_bytes)} "
            "allowed: use fewer or smaller pictures"
        )
    kept = []
    for info in infos:
        relative = member_path(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"the zip entry {info.filename!r} is a link: zip the files themselves")
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise UserError(
                f"the zip entry {info.filename!r} inflates {ratio:.0f} times (more than "
                f"{limits.max_ratio:g}): pictures barely compress, so this looks like a zip bomb"
            )
        if info.is_dir() or _skipped(relative):
            continue
        if relative.suffix.lower() in IMAGE_SUFFIXES + CAPTION_SUFFIXES:
            kept.append((info, relative))
    return kept


def member_path(name: str) -> PurePosixPath:
    """A member's path inside the archive, refusing any that could land outside it."""
    normal = name.replace("\\", "/")
    path = PurePosixPath(normal)
    if (
        not normal.strip("/")
        or normal.startswith("/")
        or re.match(r"^[A-Za-z]:", normal)
        or ".." in path.parts
        or "\0" in normal
    ):
        raise UserError(
            f"the zip entry {name!r} points outside the archive (an absolute path or '..'): "
            "zip the pictures with relative names"
        )
    return PurePosixPath(*(part for part in path.parts if part != "."))


def _skipped(relative: PurePosixPath) -> bool:
    return any(part in _SKIPPED_PARTS or part.startswith(".") for part in relative.parts)


def _inflate(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    target: Path,
    written: int,
    limits: DatasetLimits,
) -> int:
    """Copy one member, stopping as soon as it passes its declared size or the total cap."""
    with archive.open(member) as reader, target.open("xb") as out:
        seen = 0
        while chunk := reader.read(_CHUNK):
            seen += len(chunk)
            written += len(chunk)
            if seen > member.file_size or written > limits.max_total_bytes:
                raise UserError(
                    f"the zip entry {member.filename!r} inflates past its declared size: "
                    "the archive is damaged or a zip bomb"
                )
            out.write(chunk)
    return written


def _read_folder(root: Path, limits: DatasetLimits) -> Dataset:
    paths = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not path.is_symlink()
        and not _skipped(PurePosixPath(path.relative_to(root).as_posix()))
    )
    if not paths:
        raise UserError(
            f"no pictures found in {root.name}: add .png, .jpg or .webp files "
            "(captions go beside them as NAME.txt)"
        )
    if len(paths) > limits.max_images:
        raise UserError(
            f"{len(paths)} pictures is more than the {limits.max_images} allowed: "
            "a LoRA learns well from 15-50 good ones"
        )
    sizes = {path: _picture_size(path, root, limits) for path in paths}
    small = [(path, size) for path, size in sizes.items() if min(size) < limits.min_side]
    if small:
        listed = ", ".join(
            f"{path.relative_to(root).as_posix()} ({w}x{h})" for path, (w, h) in small[:_SHOWN]
        )
        more = f" and {len(small) - _SHOWN} more" if len(small) > _SHOWN else ""
        raise UserError(
            f"{len(small)} picture(s) are under {limits.min_side} px on the short side: "
            f"{listed}{more}; use larger pictures or remove these"
        )
    images = tuple(
        TrainingImage(path, _caption(path, limits), w, h, _repeats(path.parent.name))
        for path, (w, h) in sizes.items()
    )
    return Dataset(images, _tag_counts(images))


def _picture_size(path: Path, root: Path, limits: DatasetLimits) -> tuple[int, int]:
    """Decode the picture fully, so a truncated or fake file is refused now, not mid-training."""
    from PIL import Image

    name = path.relative_to(root).as_posix()
    try:
        with Image.open(path) as picture:
            width, height = picture.size
            if width * height > limits.max_pixels:
                raise UserError(
                    f"{name} is {width}x{height}, more than {limits.max_pixels:,} pixels: "
                    "scale it down first"
                )
            picture.load()
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(
            f"{name} cannot be read as a picture ({error}): save it again as PNG or JPEG"
        ) from None
    return width, height


def _caption(image: Path, limits: DatasetLimits) -> str:
    for suffix in CAPTION_SUFFIXES:
        path = image.with_suffix(suffix)
        if path.is_file():
            data = path.read_bytes()
            if len(data) > limits.max_caption_bytes:
                raise UserError(
                    f"the caption {path.name} is {len(data):,} bytes: captions are a line of tags"
                )
            text = data.decode("utf-8", errors="replace")
            return " ".join(text.split())
    return ""


def _repeats(folder: str) -> int | None:
    match = _REPEATS_FOLDER.match(folder)
    if match is None or int(match[1]) == 0:
        return None
    return int(match[1])


def _tag_counts(images: Iterable[TrainingImage]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for image in images:
        counts.setdefault(image.folder, Counter()).update(split_tags(image.caption))
    return {folder: dict(counter) for folder, counter in counts.items()}


def _mib(size: int) -> str:
    return f"{size / 1024**2:,.0f} MiB"
