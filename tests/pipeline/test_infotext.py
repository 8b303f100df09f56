"""Fields of the infotext that A1111 reads to reproduce an image."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.infotext import ImageIdentity, build_parameters, looks_like_infotext, parse_parameters
from pipeline.limits import Limits, find_rng
from pipeline.recipe import read_recipe
from pipeline.request import GenerationRequest, HiresSpec, InpaintSpec, Mode


@pytest.mark.parametrize(("rng", "written"), [("CPU", "CPU"), ("nv", "NV"), ("GPU", None)])
def test_rng_is_written_unless_gpu_which_a1111_reads_a_missing_field_as(
    rng: str, written: str | None
) -> None:
    # A1111 1.10 processing.py: "RNG": opts.randn_source if opts.randn_source != "GPU" else None;
    # infotext_utils.py: a missing RNG means GPU.
    request = GenerationRequest("a fox", rng=rng)
    text = build_parameters(request, ImageIdentity(seed=1))
    assert parse_parameters(text)[2].get("RNG") == written
    assert read_recipe(text, Limits()).options["rng"] == find_rng(rng)


@pytest.mark.parametrize(
    ("sampler", "ensd", "written"),
    [("Euler a", 31337, "31337"), ("DPM2 a", 5, "5"), ("Euler a", 0, None), ("DPM++ SDE", 9, None)],
)
def test_ensd_is_written_only_where_it_changes_the_image(
    sampler: str, ensd: int, written: str | None
) -> None:
    # A1111 1.10 writes ENSD for a non-zero delta and a sampler with uses_ensd (the ancestral
    # ones); others never draw from the reseeded generators.
    request = GenerationRequest("a fox", sampler=sampler, ensd=ensd)
    fields = parse_parameters(build_parameters(request, ImageIdentity(seed=1)))[2]
    assert fields.get("ENSD") == written


def test_an_a1111_infotext_without_rng_reads_as_gpu_noise() -> None:
    text = "a fox\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, ENSD: 31337"
    options = read_recipe(text, Limits()).options
    assert (options["rng"], options["ensd"]) == ("GPU", 31337)


def test_the_infotext_ends_with_the_version_as_a1111_does() -> None:
    import importlib.metadata

    text = build_parameters(GenerationRequest("a fox"), ImageIdentity(seed=1))
    assert text.endswith(f"Version: dreamcord {importlib.metadata.version('dreamcord')}")


# Reading, by A1111's rules (parse_generation_parameters in modules/infotext_utils.py).

FIELDS = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512"


def test_the_last_line_is_fields_only_with_three_pairs_as_in_a1111() -> None:
    text = f"a girl\nwith a hat\nNegative prompt: ugly,\nblurry\n{FIELDS}"
    prompt, negative, fields = parse_parameters(text)
    assert (prompt, negative) == ("a girl\nwith a hat", "ugly,\nblurry")
    assert fields["Seed"] == "965400086" and fields["Size"] == "512x512"
    assert parse_parameters("a girl\nred: yes, blue: no") == ("a girl\nred: yes, blue: no", "", {})


def test_quoted_values_are_json_unquoted_and_bad_quotes_kept() -> None:
    text = f'a\n{FIELDS}, Lora hashes: "a: 0123456789ab, b: ba9876543210", Odd: "x\\q"'
    fields = parse_parameters(text)[2]
    assert fields["Lora hashes"] == "a: 0123456789ab, b: ba9876543210"
    assert fields["Odd"] == '"x\\q"'


def test_a_one_line_paste_splits_at_the_negative_and_at_steps() -> None:
    expected = ("a girl, <lora:x:1>", "ugly", parse_parameters(f"a\n{FIELDS}")[2])
    assert parse_parameters(f"a girl, <lora:x:1> Negative prompt: ugly {FIELDS}") == expected
    assert parse_parameters(f"a girl, <lora:x:1>Negative prompt: ugly{FIELDS}") == expected
    assert parse_parameters(f"a girl, <lora:x:1>\nNegative prompt: ugly {FIELDS}") == expected


def test_a_prompt_is_told_apart_from_a_pasted_infotext() -> None:
    assert looks_like_infotext(f"a girl Negative prompt: ugly {FIELDS}")
    assert looks_like_infotext(f"a girl {FIELDS}")
    assert not looks_like_infotext("a girl, steps: high, (detailed:1.2), 8k")
    assert not looks_like_infotext("Steps: 20 of a staircase")


@pytest.mark.parametrize(
    ("spec", "written"),
    [
        # A1111 1.10 img2img: Mask blur when blurred; Inpaint area and Masked area padding only
        # for "Only masked" (processing.py, StableDiffusionProcessingImg2Img.init).
        (InpaintSpec(), "Denoising strength: 0.75, Mask blur: 4, Version"),
        (
            InpaintSpec(mask_blur=0, area="masked", padding=48),
            "Denoising strength: 0.75, Inpaint area: Only masked, Masked area padding: 48, Version",
        ),
        (
            InpaintSpec(fill="latent noise"),
            "Denoising strength: 0.75, Mask blur: 4, Masked content: latent noise, Version",
        ),
    ],
)
def test_an_edit_writes_a1111s_inpaint_fields(spec: InpaintSpec, written: str) -> None:
    request = GenerationRequest(
        "a fox", mode=Mode.INPAINT, init_image="a.png", mask_image="m.png", inpaint=spec
    )
    assert written in build_parameters(request, ImageIdentity(seed=1))


def test_fast_mode_writes_a1111s_token_merging_ratio_fields() -> None:
    # A1111's create_infotext: "Token merging ratio" when set, "... hr" for the hires pass.
    plain = GenerationRequest("a fox")
    fast = replace(plain, token_merging=0.5)
    written = parse_parameters(build_parameters(fast, ImageIdentity(seed=1)))[2]
    assert written["Token merging ratio"] == "0.5" and "Token merging ratio hr" not in written
    with_hires = replace(fast, hires=HiresSpec())
    hires = parse_parameters(build_parameters(with_hires, ImageIdentity(seed=1)))
    assert hires[2]["Token merging ratio hr"] == "0.5"
    untouched = parse_parameters(build_parameters(plain, ImageIdentity(seed=1)))[2]
    assert not {"Token merging ratio", "Token merging ratio hr"} & set(untouched)
