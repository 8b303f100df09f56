"""Paged list presenters: embeds, buttons and thumbnails built from plain entries."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cogs import pages


def entry(n: int, link: str | None = None, paths: tuple[Path, ...] = ()) -> pages.Entry:
    return pages.Entry(
        generation_id=n,
        title=f"Generation {n}",
        prompt=f"a *bold* fox number {n} <@123>",
        seeds=(n, n + 1),
        size="64x64",
        created_at="2026-01-02T03:04:05.000000Z",
        link=link,
        image_paths=paths,
    )


def test_jump_link_needs_channel_and_message() -> None:
    assert pages.jump_link(1, 2, 3) == "https://discord.com/channels/1/2/3"
    assert pages.jump_link(None, 2, 3) == "https://discord.com/channels/@me/2/3"
    assert pages.jump_link(1, 2, None) is None


def test_excerpt_shortens_and_makes_user_text_inert() -> None:
    text = pages.excerpt("a *bold*   <@123> " + "x" * 500, limit=40)
    assert "\\*bold\\*" in text and "\\<\\@123" in text
    assert text.endswith("…") and "   " not in text


def test_page_embeds_show_seed_size_link_and_thumbnail() -> None:
    page = pages.Page(pages.HISTORY, 7, 0, (entry(1, "https://x/1"), entry(2)), has_next=False)
    embeds = pages.page_embeds(page, ["thumb-0-1.png", None])
    first, second = (embed.to_dict() for embed in embeds)
    assert (
        first["url"] == "https://x/1" and first["thumbnail"]["url"] == "attachment://thumb-0-1.png"
    )
    assert {f["name"]: f["value"] for f in first["fields"]}["Seed"] == "1, 2"
    assert "thumbnail" not in second
    assert {f["name"]: f["value"] for f in second["fields"]}["Open"] == "not posted"
    assert first["footer"]["text"].startswith("/show id:1")


def test_page_header_counts_pages_when_the_total_is_known() -> None:
    known = pages.Page(pages.FAVOURITES, 7, 1, (entry(1),), has_next=False, total=6)
    assert pages.page_header(known) == "**Your favourites** · page 2 of 2"
    unknown = pages.Page(pages.HISTORY, 7, 0, (entry(1),), has_next=True)
    assert pages.page_header(unknown) == "**Your history** · page 1"


def test_private_view_has_previous_next_publish_with_restart_safe_ids() -> None:
    page = pages.Page(pages.HISTORY, 42, 0, (entry(1),), has_next=True)
    previous, following, publish = (b.item for b in pages.page_view(page, public=False).children)
    assert previous.custom_id == "dc:p:h:42:0:e" and previous.disabled
    assert following.custom_id == "dc:p:h:42:1:e" and not following.disabled
    assert publish.custom_id == "dc:p:h:42:0:x"
    for button in (previous, following, publish):
        assert pages.PageButton.__discord_ui_compiled_template__.fullmatch(button.custom_id)


def test_public_view_pages_for_everyone_and_has_no_publish() -> None:
    page = pages.Page(pages.FAVOURITES, 42, 3, (entry(1),), has_next=False)
    buttons = [b.item for b in pages.page_view(page, public=True).children]
    assert [b.custom_id for b in buttons] == ["dc:p:f:42:2:g", "dc:p:f:42:4:g"]
    assert buttons[1].disabled


def test_thumbnails_are_small_and_missing_files_are_skipped(tmp_path: Path) -> None:
    paths = []
    for n in range(4):
        path = tmp_path / f"{n}.png"
        Image.new("RGB", (512, 512), (n * 60, 0, 0)).save(path)
        paths.append(path)
    page = pages.Page(
        pages.HISTORY,
        1,
        0,
        (entry(1, paths=tuple(paths)), entry(2, paths=(tmp_path / "gone.png",))),
        has_next=False,
    )
    files, names = pages.page_files(page)
    assert names == ["thumb-0-1.png", None] and len(files) == 1
    thumbnail = Image.open(files[0].fp)
    assert max(thumbnail.size) == pages.THUMBNAIL_SIDE
