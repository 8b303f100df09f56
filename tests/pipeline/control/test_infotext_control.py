"""sd-webui-controlnet's infotext fields: written per unit, and a pasted recipe with them read.

The expected text follows the extension's `ControlNetUnit.serialize` (internal_controlnet/
args.py): its `infotext_fields` in order, each `Display Name: str(value)`, joined by ", ",
under `ControlNet N` from 0; A1111 JSON-quotes the whole value, which holds commas and colons.
The model is shown as A1111 lists it: `name [8 hex digits of sd_models.model_hash]`.
"""

from __future__ import annotations

from pipeline.infotext import ImageIdentity, build_parameters, parse_parameters
from pipeline.limits import Limits
from pipeline.recipe import read_recipe
from pipeline.request import ControlUnit, GenerationRequest

REQUEST = GenerationRequest(
    "a house",
    steps=20,
    sampler="Euler a",
    seed=5,
    controls=(
        ControlUnit("control_v11p_sd15_canny", "map0.png", preprocessor="canny"),
        ControlUnit(
            "control_v11p_sd15_scribble", "map1.png", 0.75, 0.1, 0.8, preprocessor="invert"
        ),
        ControlUnit("depth, v2: test", "map2.png", preprocessor="none"),
    ),
)
HASHES = (
    ("control_v11p_sd15_canny", "d14c016b"),
    ("control_v11p_sd15_scribble", "d4ba51ff"),
    ("depth, v2: test", "0a1b2c3d"),
)


def parameters() -> str:
    return build_parameters(REQUEST, ImageIdentity(seed=5, control_hashes=HASHES))


def test_each_unit_is_written_as_the_extension_serialises_it() -> None:
    fields = parse_parameters(parameters())[2]
    assert fields["ControlNet 0"] == (
        "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, "
        "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, "
        "Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced"
    )
    assert fields["ControlNet 1"] == (
        "Module: invert (from white bg & black line), "
        "Model: control_v11p_sd15_scribble [d4ba51ff], Weight: 0.75, "
        "Resize Mode: Crop and Resize, Processor Res: 0.5, Threshold A: 0.5, Threshold B: 0.5, "
        "Guidance Start: 0.1, Guidance End: 0.8, Pixel Perfect: False, Control Mode: Balanced"
    )


def test_the_value_is_json_quoted_as_a1111_quotes_it() -> None:
    assert 'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b],' in (
        parameters()
    )


def test_every_item_splits_as_the_extension_parses_it_back() -> None:
    """`ControlNetUnit.parse` splits on "," and then on ": ": a name holding either would
    break it, so the name loses them."""
    value = parse_parameters(parameters())[2]["ControlNet 2"]
    items = [item.strip().split(": ") for item in value.split(",")]
    assert all(len(item) == 2 for item in items)
    assert dict(items)["Model"] == "depth v2 test [0a1b2c3d]"


def test_a_request_without_units_writes_no_controlnet_field() -> None:
    text = build_parameters(GenerationRequest("a house"), ImageIdentity(seed=1))
    assert "ControlNet" not in text


PASTED = (
    "a house, best quality\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, '
    "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, "
    'Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", '
    'ControlNet 1: "Module: openpose_full, Model: control_v11p_sd15_openpose [cab727d4], '
    "Weight: 0.8, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 0.5, "
    "Threshold B: 0.5, Guidance Start: 0.0, Guidance End: 0.9, Pixel Perfect: True, "
    'Control Mode: Balanced", Version: v1.10.1'
)


def test_a_pasted_recipe_with_units_reads_and_notes_each_unit_is_not_taken() -> None:
    recipe = read_recipe(PASTED, Limits())
    assert recipe.options["steps"] == 20
    assert recipe.options["seed"] == 1234
    notes = [note for note in recipe.notes if note.startswith("ControlNet")]
    assert notes == [
        f"ControlNet {n}: {model!r}: not taken, as the control picture is not in the text: "
        "attach the control picture with control_image (CLI: --control-image)"
        for n, model in enumerate(
            ("control_v11p_sd15_canny [d14c016b]", "control_v11p_sd15_openpose [cab727d4]")
        )
    ]


def test_an_older_extensions_fields_are_noted_too() -> None:
    pasted = (
        "a house\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
        "ControlNet-0 Enabled: True, ControlNet-0 Module: canny, "
        "ControlNet-0 Model: control_sd15_canny [fef5e48e]"
    )
    notes = read_recipe(pasted, Limits()).notes
    assert sum("attach the control picture with control_image" in note for note in notes) == 3


def test_dreamcords_own_parameters_with_units_read_back() -> None:
    recipe = read_recipe(parameters(), Limits())
    assert recipe.options["steps"] == 20
    assert sum(note.startswith("ControlNet ") for note in recipe.notes) == 3


def test_a_depth_unit_is_written_as_the_extensions_depth_midas_at_its_512_resolution() -> None:
    """sd-webui-controlnet labels its `depth` preprocessor depth_midas; its one slider is the
    512 resolution (scripts/preprocessor/legacy/preprocessor_compiled.py)."""
    unit = ControlUnit("control_v11f1p_sd15_depth", "map.png", preprocessor="depth")
    request = GenerationRequest("a house", controls=(unit,))
    identity = ImageIdentity(seed=0, control_hashes=(("control_v11f1p_sd15_depth", "cfd03158"),))
    fields = parse_parameters(build_parameters(request, identity))[2]
    assert fields["ControlNet 0"].startswith(
        "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1.0, "
        "Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, "
    )
