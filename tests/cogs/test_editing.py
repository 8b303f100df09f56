"""The edit buttons, picker and modals: within Discord's limits, and their custom ids read back
to the same edit (they are all a click carries after a restart)."""

from __future__ import annotations

import re
from dataclasses import replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cogs.buttons import result_view
from cogs.editing import EditAction, EditButton, RegionModal, RegionSelect, ZoomModal, region_view
from tests.cogs.test_text_budgets import MENTIONS, WORST, fits, generation, user_text
from tests.fakediscord.validation import check_modal

few = settings(max_examples=40, deadline=None)
ids = st.integers(0, 10**18 - 1)
indexes = st.integers(0, 99)


def template(item: type) -> re.Pattern[str]:
    return item.__discord_ui_compiled_template__  # type: ignore[attr-defined, no-any-return]


@few
@given(st.sampled_from(list(EditAction)), ids, indexes)
@example(EditAction.ZOOM_1_5, 10**18 - 1, 99)
def test_an_edit_buttons_custom_id_reads_back_to_the_same_edit(
    action: EditAction, generation_id: int, index: int
) -> None:
    custom_id = EditButton(action, generation_id, index).item.custom_id or ""
    assert len(custom_id) <= 100
    match = template(EditButton).fullmatch(custom_id)
    assert match is not None
    assert (match["action"], int(match["generation"]), int(match["index"])) == (
        action.value,
        generation_id,
        index,
    )


@few
@given(ids, indexes)
def test_the_region_pickers_custom_id_reads_back(generation_id: int, index: int) -> None:
    custom_id = RegionSelect(generation_id, index).item.custom_id or ""
    match = template(RegionSelect).fullmatch(custom_id)
    assert match is not None and int(match["generation"]) == generation_id
    assert template(EditButton).fullmatch(custom_id) is None, "the two never mix"


def test_one_image_gets_the_edit_rows_and_make_square_only_when_not_square() -> None:
    square = generation("a fox", images=1)
    labels = [child.item.label for child in result_view(square).children]  # type: ignore[attr-defined]
    assert labels[7:11] == ["Vary (Region)", "Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"]
    assert "Make Square" not in labels and len(labels) == 15
    fits("done", view=result_view(square))
    wide = replace(square, images=(replace(square.images[0], width=128),))
    assert [c.item.label for c in result_view(wide).children][-1] == "Make Square"  # type: ignore[attr-defined]
    fits("done", view=result_view(wide))
    grid = generation("a fox", images=4)
    assert all(
        not str(c.item.custom_id).startswith("dc:x:")  # type: ignore[attr-defined]
        for c in result_view(grid).children
    ), "a grid has no edit buttons: pick one with U first"


def test_the_region_picker_fits_and_allows_several_regions() -> None:
    fits("Which parts?", view=region_view(10**18 - 1, 99))
    select = RegionSelect(1, 0).item
    assert select.min_values == 1 and select.max_values == len(select.options) == 14


@few
@given(user_text)
@example(WORST)
@example(MENTIONS)
def test_the_edit_modals_fit_any_stored_prompt(prompt: str) -> None:
    stored = generation(prompt, images=1)
    for modal in (RegionModal(stored, 0, ("top", "left")), ZoomModal(stored, 0)):
        check_modal(modal.to_dict())
        assert prompt.startswith(modal.prompt.default or "")
