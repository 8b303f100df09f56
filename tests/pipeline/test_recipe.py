"""Reading pasted A1111 recipes: every field A1111 writes, its defaults, notes and bad input.

The infotexts are written the way A1111 1.10 writes them (`create_infotext` in
modules/processing.py; the Civitai example of the issue), and the expectations follow A1111's
own paste (`parse_generation_parameters` in modules/infotext_utils.py), never Dreamcord's writer.
"""

from __future__ import annotations

import pytest

from pipeline.errors import UserError
from pipeline.limits import Limits
from pipeline.recipe import FileRef, read_recipe
from pipeline.request import InpaintSpec

CIVITAI = (
    "masterpiece, best quality, 1girl, <lora:add_detail:0.5>\n"
    "Negative prompt: (worst quality, low quality:1.4), easynegative\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, "
    "Size: 512x768, Model hash: 7f96a1a9ca, Model: anything-v5, VAE hash: 235745af8d, "
    "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.4, Clip skip: 2, "
    "Hires upscale: 2, Hires steps: 15, Hires upscaler: Latent, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", '
    "Version: v1.10.1"
)
BASE = "a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512"
LIMITS = Limits()


def read(text: str, **given: object):
    return read_recipe(text, LIMITS, given)


def test_a_civitai_infotext_sets_every_field_it_names() -> None:
    recipe = read(CIVITAI)
    assert recipe.prompt == "masterpiece, best quality, 1girl, <lora:add_detail:0.5>"
    assert recipe.negative == "(worst quality, low quality:1.4), easynegative"
    assert dict(recipe.options) == {
        "steps": 28,
        "sampler": "DPM++ 2M",
        "schedule": "Karras",
        "cfg": 7.0,
        "seed": 1234567890,
        "width": 512,
        "height": 768,
        "clip_skip": 2,
        "hires": True,
        "hires_denoise": 0.4,
        "hires_scale": 2.0,
        "hires_steps": 15,
        "hires_upscaler": "Latent",
        "rng": "GPU",  # no RNG field: A1111 reads it as GPU noise
    }
    assert recipe.model == FileRef("anything-v5", "7f96a1a9ca")
    assert recipe.lora_hashes == (FileRef("add_detail", "7c6bad76eb54"),)
    assert recipe.ti_hashes == (FileRef("easynegative", "c74b4e810b03"),)
    assert recipe.strength is None
    assert recipe.vae == FileRef("vae-ft-mse-840000-ema-pruned.safetensors", "235745af8d")
    assert recipe.notes == ()  # the files are matched against what is installed later


def test_the_one_line_form_discord_delivers_reads_the_same() -> None:
    assert read(CIVITAI.replace("\n", " ")) == read(CIVITAI)
    assert read(CIVITAI.replace("\n", "")) == read(CIVITAI)


def test_missing_fields_take_a1111s_paste_defaults() -> None:
    recipe = read(BASE)
    assert recipe.negative == ""
    options = recipe.options
    assert (options["clip_skip"], options["rng"], options["schedule"]) == (1, "GPU", "Automatic")
    assert options["hires"] is False
    assert "count" not in options and "ensd" not in options and "variation_seed" not in options
    assert recipe.notes == ()


@pytest.mark.parametrize(
    ("sampler", "schedule_field", "expected"),
    [
        ("DPM++ 2M Karras", "", ("DPM++ 2M", "Karras")),
        ("DPM++ SDE Karras", "", ("DPM++ SDE", "Karras")),
        ("DPM++ 2M SDE Exponential", "", ("DPM++ 2M SDE", "Exponential")),
        ("Euler a", ", Schedule type: Automatic", ("Euler a", "Automatic")),
        ("DPM++ 2M", ", Schedule type: SGM Uniform", ("DPM++ 2M", "SGM Uniform")),
        # A1111's get_sampler_and_scheduler: a schedule inside the name wins over the field.
        ("DPM++ 2M Karras", ", Schedule type: Exponential", ("DPM++ 2M", "Karras")),
    ],
)
def test_sampler_names_old_and_new(sampler: str, schedule_field: str, expected) -> None:
    text = BASE.replace("Sampler: Euler a", f"Sampler: {sampler}{schedule_field}")
    options = read(text).options
    assert (options["sampler"], options["schedule"]) == expected


def test_rng_ensd_and_variation_seeds_are_read() -> None:
    text = (
        f"{BASE}, Variation seed: 99, Variation seed strength: 0.3, ENSD: 31337, RNG: CPU, "
        "Batch size: 2, Batch pos: 1"
    )
    options = read(text).options
    assert (options["variation_seed"], options["variation_strength"]) == (99, 0.3)
    assert (options["ensd"], options["rng"], options["count"]) == (31337, "CPU", 2)
    assert read(f"{BASE}, RNG: NV").options["rng"] == "NV"


@pytest.mark.parametrize(
    ("fields", "scale", "noted"),
    [
        ("Hires resize: 1024x1536", 2.0, False),
        ("Hires resize: 0x1152", 1.5, False),
        ("Hires resize: 768x0", 1.5, False),
        # 512x768 to 1024x1024: A1111 upscales by 2 to 1024x1536, then crops.
        ("Hires resize: 1024x1024", 2.0, True),
    ],
)
def test_hires_resize_becomes_the_scale_a1111_upscales_by(fields, scale, noted) -> None:
    text = BASE.replace("512x512", "512x768") + f", Denoising strength: 0.5, {fields}"
    recipe = read(text)
    assert recipe.options["hires_scale"] == scale
    assert any("not cropped" in note for note in recipe.notes) == noted


def test_hires_steps_missing_means_the_first_passes_count() -> None:
    text = f"{BASE}, Denoising strength: 0.5, Hires upscale: 1.5, Hires upscaler: Latent"
    options = read(text).options
    assert (options["hires"], options["hires_steps"], options["hires_scale"]) == (True, 0, 1.5)


def test_a_denoising_strength_without_hires_fields_is_an_img2img_strength() -> None:
    recipe = read(f"{BASE}, Denoising strength: 0.75, Mask blur: 4")
    assert recipe.options["hires"] is False
    assert recipe.strength == 0.75
    assert any(note.startswith("Mask blur: '4'") for note in recipe.notes)


def test_hires_fields_without_a_denoising_strength_leave_highres_fix_off_as_a1111() -> None:
    recipe = read(f"{BASE}, Hires upscale: 2, Hires steps: 10")
    assert recipe.options["hires"] is False
    assert any("leaves highres fix off" in note for note in recipe.notes)


def test_every_field_that_cannot_be_honoured_is_a_note() -> None:
    extras = {
        "Face restoration": "CodeFormer",
        "Seed resize from": "768x512",
        "Eta": "0.67",
        "Pad conds": "True",
        "Hires sampler": "Euler",
        "Hires prompt": '"a castle"',
        "Tiling": "True",
        "Some extension": "on",
    }
    hires = "Denoising strength: 0.5, Hires upscale: 2"
    adetailer = "ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3"
    text = f"{BASE}, {hires}, " + ", ".join(f"{k}: {v}" for k, v in extras.items())
    notes = read(f"{text}, {adetailer}").notes
    for field in extras:
        assert sum(note.startswith(f"{field}: ") for note in notes) == 1, field
    assert sum("ADetailer" in note for note in notes) == 1
    assert len(notes) == len(extras) + 1


def test_values_that_ask_for_the_default_need_no_note() -> None:
    fields = "Hires sampler: Use same sampler, Hires checkpoint: Use same checkpoint"
    text = f"{BASE}, Denoising strength: 0.5, Hires upscale: 2, {fields}, Emphasis: Original"
    assert read(f"{text}, Version: v1.10.1").notes == ()


def test_an_unknown_sampler_or_schedule_is_noted_with_what_runs_instead() -> None:
    recipe = read(BASE.replace("Euler a", "Restart") + ", Schedule type: Align Your Steps")
    assert "sampler" not in recipe.options
    assert recipe.options["schedule"] == "Automatic"
    assert any(n.startswith("Sampler: 'Restart' is not offered here") for n in recipe.notes)
    assert any(n.startswith("Schedule type: 'Align Your Steps'") for n in recipe.notes)


@pytest.mark.parametrize(
    ("field", "value", "option", "used"),
    [
        ("Steps", "150", "steps", 60),
        ("CFG scale", "50", "cfg", 30.0),
        ("Clip skip", "12", "clip_skip", 4),
        ("Batch size", "8", "count", 4),
    ],
)
def test_values_over_the_servers_limits_are_clamped_with_a_note(field, value, option, used):
    text = BASE.replace("Steps: 20", "Steps: 20" if field != "Steps" else "Steps: 150")
    if field != "Steps":
        text = text.replace(f", {field}: 7", "") + f", {field}: {value}"
    recipe = read(text)
    assert recipe.options[option] == used
    assert any(note.startswith(f"{field}: {value} is ") for note in recipe.notes)


def test_a_hires_scale_over_two_is_clamped() -> None:
    recipe = read(f"{BASE}, Denoising strength: 0.5, Hires upscale: 4")
    assert recipe.options["hires_scale"] == 2.0
    assert any(note.startswith("Hires upscale: 4 is outside") for note in recipe.notes)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("Steps: 20", "Steps: many"), "Steps: 'many' is not a whole number"),
        (("Size: 512x512", "Size: big"), "Size: 'big' is not WxH"),
        (("Seed: 1", "Seed: 1.5"), "Seed: '1.5' is not a whole number"),
        (("CFG scale: 7", "CFG scale: nan"), "CFG scale: 'nan' is not a finite number"),
        (("Seed: 1", "Seed: 99999999999999999999"), "Seed: 99999999999999999999 is out of range"),
        (("Steps: 20", "Steps: 0"), "Steps: 0 is out of range"),
        (("Size: 512x512", "Size: 512x512, Denoising strength: 2"), "Denoising strength: 2"),
        (
            ("Seed: 1", "Seed: 1, Variation seed: 2, Variation seed strength: 3"),
            "Variation seed strength: 3 is out of range",
        ),
    ],
)
def test_a_bad_value_names_the_field(change: tuple[str, str], says: str) -> None:
    with pytest.raises(UserError, match=says):
        read(BASE.replace(*change))


@pytest.mark.parametrize(
    "text", ["a red fox", "", "Steps: lots", "hello: world", "a\nb\nc: d, e: f"]
)
def test_a_text_that_is_not_an_infotext_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="this is not A1111 parameters"):
        read(text)


def test_a_prompt_and_negative_alone_are_a_recipe() -> None:
    recipe = read("a red fox\nNegative prompt: blurry")
    assert (recipe.prompt, recipe.negative) == ("a red fox", "blurry")


def test_options_given_with_the_paste_win_and_their_fields_are_not_read() -> None:
    text = BASE.replace("Steps: 20", "Steps: many") + ", Denoising strength: 0.5, Hires upscale: 2"
    recipe = read(text, steps=10, prompt="a cat", hires=False, seed=None)
    assert "steps" not in recipe.options and "hires_scale" not in recipe.options
    assert recipe.options["seed"] == 1  # None is not given
    assert recipe.prompt is None and recipe.negative == ""
    assert recipe.notes == ()


def test_hash_lists_split_as_a1111_splits_them() -> None:
    text = f'{BASE}, Lora hashes: "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef, junk"'
    recipe = read(text)
    assert recipe.lora_hashes == (
        FileRef("add_detail", "7c6bad76eb54"),
        FileRef("more_details", "3b8aa1d351ef"),
    )
    assert any("'junk' is not 'name: hash'" in note for note in recipe.notes)


def test_a_hash_that_is_not_hex_is_noted_and_the_name_kept() -> None:
    recipe = read(f"{BASE}, Model hash: [7f96], Model: anything-v5")
    assert recipe.model == FileRef("anything-v5", "")
    assert any(note.startswith("Model hash: '[7f96]' is not a hash") for note in recipe.notes)


def test_a_timestep_sampler_runs_its_own_timesteps_with_a_note() -> None:
    recipe = read(BASE.replace("Euler a", "DDIM, Schedule type: Karras"))
    assert (recipe.options["sampler"], recipe.options["schedule"]) == ("DDIM", "Automatic")
    assert any("DDIM keeps its own timesteps" in note for note in recipe.notes)


@pytest.mark.parametrize("field", ["Variation seed", "ENSD"])
def test_seed_like_fields_stay_in_the_seed_range(field: str) -> None:
    with pytest.raises(UserError, match=f"{field}: 9007199254740993 is out of range"):
        read(f"{BASE}, {field}: 9007199254740993, Variation seed strength: 0.5")


def test_an_inpaint_recipe_gives_its_mask_treatment_with_a_note_for_each_field() -> None:
    # As A1111 1.10 writes an "Only masked" inpaint: processing.py's extra_generation_params.
    text = (
        f"{BASE}, Denoising strength: 0.6, Mask blur: 8, Inpaint area: Only masked, "
        "Masked area padding: 48, Masked content: latent noise"
    )
    recipe = read(text)
    assert recipe.inpaint == InpaintSpec(8, "masked", 48, "latent noise")
    assert recipe.strength == 0.6
    assert [note.split(":")[0] for note in recipe.notes] == [
        "Mask blur",
        "Inpaint area",
        "Masked area padding",
        "Masked content",
    ]
    assert read(BASE).inpaint is None


def test_an_inpaint_value_dreamcord_does_not_offer_is_noted_with_what_runs() -> None:
    recipe = read(f"{BASE}, Masked content: fill, Mask blur: 99")
    assert recipe.inpaint == InpaintSpec(mask_blur=64)
    assert "Masked content: 'fill': not offered here: original is used" in recipe.notes
    assert any(
        note.startswith("Mask blur: 99 is over this server's limit") for note in recipe.notes
    )


def test_a1111s_token_merging_ratio_becomes_fast_mode_at_that_ratio() -> None:
    assert read(f"{BASE}, Token merging ratio: 0.3").options["token_merging"] == 0.3
    assert "token_merging" not in read(BASE).options
    mixed = read(f"{BASE}, Token merging ratio: 0.5, Token merging ratio hr: 0.2")
    assert mixed.options["token_merging"] == 0.5
    assert any("Token merging ratio hr: 0.2 is not used" in note for note in mixed.notes)
    with pytest.raises(UserError, match="Token merging ratio"):
        read(f"{BASE}, Token merging ratio: 0.9")
