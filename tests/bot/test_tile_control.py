"""Which ControlNet guides a tiled upscale, and how its unit joins the request's units."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bot.controls import tile_model
from bot.followups import with_tile_control
from pipeline.request import ControlUnit, GenerationRequest, Mode, TileSpec

SOURCE = "images/ab/source.png"
UPSCALE = GenerationRequest(
    "a castle", mode=Mode.UPSCALE, init_image=SOURCE, strength=0.25, tiles=TileSpec()
)


@dataclass(frozen=True)
class Model:
    name: str
    control_type: str
    enabled: bool = True


def test_the_first_enabled_tile_model_by_name_is_chosen() -> None:
    models = [Model("b-tile", "tile"), Model("A-tile", "tile", enabled=False), Model("c", "canny")]
    assert tile_model(models) == "b-tile"
    assert tile_model([*models, Model("a-tile", "tile")]) == "a-tile"
    assert tile_model([Model("c", "canny")]) is None


def test_without_a_tile_model_the_upscale_is_unchanged() -> None:
    assert with_tile_control(UPSCALE, None) is UPSCALE


def test_the_unit_maps_the_source_at_weight_1_replacing_an_earlier_upscale_s() -> None:
    canny = ControlUnit("edges", "edges.png", preprocessor="canny")
    earlier = ControlUnit("tile", "older-source.png")
    request = with_tile_control(_with(canny, earlier), "tile")
    assert request.controls == (canny, ControlUnit("tile", SOURCE, 1.0, 0.0, 1.0, "none"))


def test_with_every_unit_slot_taken_the_upscale_is_unchanged() -> None:
    full = _with(*(ControlUnit(f"m{n}", f"{n}.png") for n in range(3)))
    assert with_tile_control(full, "tile") is full


def _with(*units: ControlUnit) -> GenerationRequest:
    return replace(UPSCALE, controls=units)
