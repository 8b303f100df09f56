"""Building a request from the prompt and every layer of options: clip skip and highres fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.requests import build_request
from bot.settings import Settings, load_settings
from pipeline.errors import UserError
from pipeline.request import HiresSpec

SETTINGS = load_settings(None, model="tiny")


@pytest.mark.parametrize(
    ("text", "explicit", "user", "server", "expected"),
    [
        ("a fox", {}, {}, {}, 1),
        ("a fox", {}, {}, {"clip_skip": 2}, 2),
        ("a fox", {}, {"clip_skip": 3}, {"clip_skip": 2}, 3),
        ("a fox --clip-skip 2", {}, {"clip_skip": 3}, {}, 2),
        ("a fox --clip-skip 2", {"clip_skip": 4}, {}, {}, 4),
    ],
)
def test_clip_skip_comes_from_the_first_layer_that_sets_it(
    text: str, explicit: dict, user: dict, server: dict, expected: int
) -> None:
    built = build_request(text, SETTINGS, explicit=explicit, user=user, server=server)
    assert built.request.clip_skip == expected
    assert built.request.prompt == "a fox"


@pytest.mark.parametrize(
    ("explicit", "user", "env", "expected"),
    [
        ({}, {}, {}, ("CPU", 0)),
        ({}, {}, {"rng": "gpu", "ensd": 31337}, ("GPU", 31337)),
        ({}, {"rng": "NV", "ensd": 5}, {"rng": "gpu"}, ("NV", 5)),
        ({"rng": "CPU", "ensd": 0}, {"rng": "NV", "ensd": 5}, {}, ("CPU", 0)),
    ],
)
def test_rng_and_ensd_come_from_the_first_layer_that_sets_them(
    explicit: dict, user: dict, env: dict, expected: tuple[str, int]
) -> None:
    settings = load_settings(None, model="tiny", **env)
    request = build_request("a fox", settings, explicit=explicit, user=user).request
    assert (request.rng, request.ensd) == expected


@pytest.mark.parametrize(
    ("text", "explicit", "user", "expected"),
    [
        ("a fox", {}, {}, None),
        ("a fox --hires", {}, {}, HiresSpec(2.0, 15, 0.55, "Latent")),
        ("a fox", {}, {"hires": True, "hires_scale": 1.5}, HiresSpec(1.5, 15, 0.55, "Latent")),
        # Giving a hires setting explicitly asks for highres fix; an explicit off wins.
        ("a fox", {"hires_steps": 8}, {}, HiresSpec(2.0, 8, 0.55, "Latent")),
        ("a fox --hires", {"hires": False, "hires_scale": 1.5}, {}, None),
        # A saved hires setting alone does not switch highres fix on.
        ("a fox", {}, {"hires_scale": 1.5}, None),
        # The denoise defaults to the upscaler's own unless a layer sets it.
        ("a fox", {"hires_upscaler": "lanczos"}, {}, HiresSpec(2.0, 15, 0.35, "Lanczos")),
        (
            "a fox",
            {"hires_upscaler": "Latent (nearest)", "hires_denoise": 0.4},
            {"hires_denoise": 0.7},
            HiresSpec(2.0, 15, 0.4, "Latent (nearest)"),
        ),
    ],
)
def test_highres_fix_comes_from_its_switch_and_settings(
    text: str, explicit: dict, user: dict, expected: HiresSpec | None
) -> None:
    built = build_request(text, SETTINGS, explicit=explicit, user=user)
    assert built.request.hires == expected


def test_an_unknown_hires_upscaler_names_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown upscaler 'Bicubic\+\+'.*Latent"):
        build_request("a fox", SETTINGS, explicit={"hires_upscaler": "Bicubic++"})


@pytest.fixture
def anime_model(tmp_path: Path) -> Settings:
    """MODELS_DIR with one checkpoint whose sidecar asks for clip skip 2, as its card says."""
    (tmp_path / "anything-v5.safetensors").write_bytes(b"")
    (tmp_path / "anything-v5.json").write_text('{"clip_skip": 2, "description": "anime"}')
    return load_settings(None, model="tiny", models_dir=tmp_path)


def test_a_models_sidecar_sets_its_clip_skip_under_the_users_own(anime_model: Settings) -> None:
    def clip_skip(user: dict, model: str = "anything-v5") -> int:
        explicit = {"model": model}
        return build_request("a fox", anime_model, explicit=explicit, user=user).request.clip_skip

    assert clip_skip({}) == 2
    assert clip_skip({}, model="default") == 1
    assert clip_skip({"clip_skip": 1}) == 1
    built = build_request(
        "a fox", anime_model, explicit={"model": "anything-v5"}, server={"clip_skip": 3}
    )
    assert built.request.clip_skip == 2  # the model's card wins over a server-wide default


@pytest.mark.parametrize(
    ("sidecar", "hint"),
    [
        ("{not json", "is not readable JSON"),
        ("[2]", "must hold a JSON object"),
        ('{"clip_skip": 9}', "clip_skip is 9; use a whole number 1 to 4"),
        ('{"clip_skip": "2"}', "clip_skip is '2'"),
    ],
)
def test_a_bad_sidecar_names_the_file_and_the_fix(
    anime_model: Settings, sidecar: str, hint: str
) -> None:
    assert anime_model.models_dir is not None
    (anime_model.models_dir / "anything-v5.json").write_text(sidecar)
    with pytest.raises(UserError, match=f"anything-v5.json.*{hint}"):
        build_request("a fox", anime_model, explicit={"model": "anything-v5"})


@pytest.mark.parametrize(
    ("text", "explicit", "expected"),
    [
        ("a fox", {}, 0.0),
        ("a fox --fast", {}, 0.5),
        ("a fox", {"fast": True}, 0.5),
        ("a fox", {"fast": None}, 0.0),
    ],
)
def test_fast_mode_is_asked_for_never_the_default(
    text: str, explicit: dict, expected: float
) -> None:
    assert build_request(text, SETTINGS, explicit=explicit).request.token_merging == expected
