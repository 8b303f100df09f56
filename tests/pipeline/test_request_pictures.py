"""A request's pictures and the same request reading them elsewhere (a remote worker's copies).

Paths come from outside (a batch message's manifest), so any text is tried.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from pipeline.request import ControlUnit, GenerationRequest, ImagePrompt, Mode

paths = st.text(min_size=1, max_size=30)


@st.composite
def requests(draw: st.DrawFn) -> GenerationRequest:
    return GenerationRequest(
        "a fox",
        mode=Mode.INPAINT,
        init_image=draw(st.none() | paths),
        mask_image=draw(st.none() | paths),
        controls=tuple(ControlUnit("edges", path) for path in draw(st.lists(paths, max_size=3))),
        image_prompts=tuple(ImagePrompt(path) for path in draw(st.lists(paths, max_size=3))),
    )


@given(request=requests(), moved=st.dictionaries(paths, paths, max_size=6))
def test_each_picture_moves_where_the_mapping_says_and_nothing_else_changes(
    request: GenerationRequest, moved: dict[str, str]
) -> None:
    after = request.with_pictures(moved)
    assert after.pictures() == tuple(dict.fromkeys(moved.get(p, p) for p in request.pictures()))
    untouched = replace(
        after,
        init_image=request.init_image,
        mask_image=request.mask_image,
        controls=request.controls,
        image_prompts=request.image_prompts,
    )
    assert untouched == request
    assert GenerationRequest.from_json(after.to_json()) == after
    assert request.with_pictures({}) == request


def test_a_request_without_pictures_has_none() -> None:
    assert GenerationRequest("a fox").pictures() == ()
