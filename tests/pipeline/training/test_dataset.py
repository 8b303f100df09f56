"""Training sets from folders and zips: what is read, and every way a hostile zip is refused."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.training.dataset import DatasetLimits, member_path, open_dataset
from tests.pipeline.training.pictures import picture, training_set, write_folder, write_zip


def test_a_folder_gives_pictures_captions_repeats_and_tag_counts(tmp_path: Path) -> None:
    root = write_folder(
        tmp_path / "set",
        {
            "10_fox/a.png": picture(300, 256),
            "10_fox/a.txt": "fox,  snow , \n photo",
            "10_fox/b.jpg": picture(256, 320, seed=1, fmt="JPEG"),
            "10_fox/b.caption": "fox, grass",
            "c.webp": picture(256, 256, seed=2, fmt="WEBP"),
            "notes.md": "ignored",
        },
    )
    dataset = open_dataset(root, tmp_path / "unused")
    by_name = {image.path.name: image for image in dataset.images}
    assert sorted(by_name) == ["a.png", "b.jpg", "c.webp"]
    assert (by_name["a.png"].width, by_name["a.png"].height) == (300, 256)
    assert by_name["a.png"].caption == "fox, snow , photo"
    assert by_name["b.jpg"].caption == "fox, grass"
    assert by_name["c.webp"].caption == ""  # the plan puts the trigger word there
    assert [by_name[n].repeats for n in ("a.png", "b.jpg", "c.webp")] == [10, 10, None]
    # sd-scripts' ss_tag_frequency: per folder, tags split at commas and stripped.
    assert dataset.tag_counts["10_fox"] == {"fox": 2, "snow": 1, "photo": 1, "grass": 1}
    assert not (tmp_path / "unused").exists()


def test_a_zip_is_extracted_into_its_folder(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "set.zip", {"top/" + k: v for k, v in training_set(3).items()})
    dataset = open_dataset(source, tmp_path / "out")
    assert len(dataset.images) == 3
    assert all(image.path.is_relative_to(tmp_path / "out") for image in dataset.images)
    assert {image.repeats for image in dataset.images} == {2}


def _refused(source: Path, into: Path, limits: DatasetLimits | None = None) -> str:
    with pytest.raises(UserError) as error:
        open_dataset(source, into, limits or DatasetLimits())
    assert not into.exists(), "a refused zip must leave nothing behind"
    return str(error.value)


def test_a_zip_bomb_by_ratio_is_refused_before_extracting(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "bomb.zip", {"a.png": picture(), "zeros.png": bytes(10**7)})
    assert "looks like a zip bomb" in _refused(source, tmp_path / "out")


def test_a_zip_too_large_in_total_is_refused(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "big.zip", training_set(4), method=zipfile.ZIP_STORED)
    message = _refused(source, tmp_path / "out", DatasetLimits(max_total_bytes=2_000))
    assert "would unpack to" in message and "allowed" in message


def test_a_header_that_lies_about_its_size_is_stopped_while_inflating(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "liar.zip", {"a.png": picture()}, method=zipfile.ZIP_STORED)
    # Rewrite the central directory's uncompressed size to 10 bytes: the stored data is larger.
    data = bytearray(source.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    source.write_bytes(bytes(data))
    message = _refused(source, tmp_path / "out")
    assert "declared size" in message or "damaged zip" in message


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    files = {f"{i}.txt": "fox" for i in range(30)}
    message = _refused(
        write_zip(tmp_path / "many.zip", files), tmp_path / "out", DatasetLimits(max_members=20)
    )
    assert "30 entries, more than the 20 allowed" in message


def test_too_many_pictures_are_refused(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "set.zip", training_set(4))
    message = _refused(source, tmp_path / "out", DatasetLimits(max_images=3))
    assert "4 pictures is more than the 3 allowed" in message


def test_a_zip_without_pictures_is_refused(tmp_path: Path) -> None:
    source = write_zip(tmp_path / "text.zip", {"a.txt": "fox", "readme.md": "hello"})
    assert "no pictures found" in _refused(source, tmp_path / "out")


def test_small_pictures_are_named_with_their_sizes(tmp_path: Path) -> None:
    files = training_set(2) | {
        "2_fox/small.png": picture(255, 400),
        "tiny.jpg": picture(64, 64, fmt="JPEG"),
    }
    message = _refused(write_zip(tmp_path / "s.zip", files), tmp_path / "out")
    assert "2 picture(s) are under 256 px" in message
    assert "2_fox/small.png (255x400)" in message and "tiny.jpg (64x64)" in message


def test_an_unreadable_picture_is_refused_by_name(tmp_path: Path) -> None:
    truncated = picture(256, 256)[:400]
    files = training_set(1) | {"broken.png": truncated, "fake.jpg": b"not a picture"}
    message = _refused(write_zip(tmp_path / "u.zip", files), tmp_path / "out")
    assert "cannot be read as a picture" in message and (
        "broken.png" in message or "fake.jpg" in message
    )


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "link.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("a.png", picture())
        link = zipfile.ZipInfo("b.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    assert "is a link" in _refused(source, tmp_path / "out")


def test_not_a_zip_and_missing_sources_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"hello")
    assert "is not a zip file" in _refused(tmp_path / "x.zip", tmp_path / "out")
    assert "does not exist" in _refused(tmp_path / "nope.zip", tmp_path / "out")


def test_macos_resource_forks_are_skipped(tmp_path: Path) -> None:
    files = training_set(1) | {"__MACOSX/2_fox/._00.png": b"\0\5\26\7", ".hidden.png": b"x"}
    dataset = open_dataset(write_zip(tmp_path / "mac.zip", files), tmp_path / "out")
    assert [image.path.name for image in dataset.images] == ["00.png"]


_parts = st.text(st.sampled_from("ab./\\:C0 "), min_size=1, max_size=12)


@given(prefix=st.sampled_from(["/", "\\", "C:", "c:/", ""]), name=_parts)
def test_member_names_never_leave_the_archive(prefix: str, name: str) -> None:
    """Any name member_path accepts stays inside a folder once joined to it."""
    raw = prefix + name
    try:
        path = member_path(raw)
    except UserError:
        return
    root = Path("/safe/root")
    joined = root.joinpath(*path.parts).resolve()
    assert joined.is_relative_to(root), raw
    assert not raw.startswith(("/", "\\")) and ".." not in raw.replace("\\", "/").split("/")


@given(parents=st.integers(1, 4), depth=st.integers(0, 3))
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_traversal_members_are_refused_and_nothing_is_written(
    tmp_path: Path, parents: int, depth: int
) -> None:
    name = "/".join(["d"] * depth + [".."] * parents + ["evil.png"])
    into = tmp_path / f"out-{parents}-{depth}"
    source = write_zip(tmp_path / f"t-{parents}-{depth}.zip", training_set(1) | {name: picture()})
    assert "points outside the archive" in _refused(source, into)
    assert not (tmp_path / "evil.png").exists()


@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".png", ".jpg", ".webp"]))
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_as_a_picture_are_read_or_refused_by_name(
    tmp_path: Path, data: bytes, suffix: str
) -> None:
    root = write_folder(tmp_path / f"set-{len(data)}-{suffix[1:]}", {"2_fox/a.png": picture()})
    (root / "2_fox" / f"odd{suffix}").write_bytes(data)
    try:
        dataset = open_dataset(root, tmp_path / "unused")
    except UserError as error:
        assert f"odd{suffix}" in str(error)
    else:
        assert all(min(i.width, i.height) >= 256 for i in dataset.images)


@given(text=st.text(max_size=300))
@example(text="sksfox, grass,\r\n sksfox")
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_caption_text_becomes_one_line_of_tags(tmp_path: Path, text: str) -> None:
    from pipeline.training.plan import caption_with_trigger

    root = tmp_path / f"c-{abs(hash(text))}"
    write_folder(root, {"a.png": picture()})
    (root / "a.txt").write_bytes(text.encode("utf-8", errors="surrogatepass"))
    caption = open_dataset(root, tmp_path / "unused").images[0].caption
    assert "\n" not in caption and caption == caption.strip()
    tags = caption_with_trigger(caption, "sksfox").split(", ")
    assert tags[0] == "sksfox" and tags.count("sksfox") == 1
