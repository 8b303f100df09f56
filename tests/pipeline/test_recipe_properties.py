"""Property test: any pasted text gives a recipe within the limits or a UserError, nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import UserError
from pipeline.limits import MAX_CLIP_SKIP, Limits
from pipeline.recipe import read_recipe
from pipeline.recipe_files import FileKind, Match, match_files

LIMITS = Limits()
FIELD_NAMES = [
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Seed",
    "Size",
    "Clip skip",
    "Batch size",
    "Denoising strength",
    "Hires upscale",
    "Hires resize",
    "Hires steps",
    "Hires upscaler",
    "Variation seed",
    "Variation seed strength",
    "ENSD",
    "RNG",
    "Model hash",
    "Model",
    "Lora hashes",
    "TI hashes",
    "Hypernet",
    "Hypernet strength",
    "VAE",
    "Face restoration",
    "ADetailer model",
]
VALUES = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.tuples(st.integers(0, 5000), st.integers(0, 5000)).map(lambda wh: f"{wh[0]}x{wh[1]}"),
    st.sampled_from(["Euler a", "DPM++ 2M Karras", "Karras", "Latent", "GPU", "CPU", "NV", ""]),
    st.sampled_from(["9" * 5000, "9" * 5000 + "x512", "512x" + "9" * 5000]),  # past int()'s limit
    st.text(alphabet=st.characters(blacklist_characters=",\n"), max_size=30),
    st.text(max_size=30).map(lambda text: '"' + text.replace('"', "") + '"'),
)
KEYS = st.sampled_from(FIELD_NAMES) | st.text(min_size=1)
FIELDS = st.lists(st.tuples(KEYS, VALUES), max_size=12)


class Nothing:
    """An installation with nothing but a model called `tiny` and a LoRA called `detail`."""

    def find(self, kind: FileKind, ref) -> Match | None:
        known = {FileKind.MODEL: "tiny", FileKind.LORA: "detail"}.get(kind)
        return Match(known) if known and ref.name.lower() == known else None


def _check(text: str) -> None:
    try:
        recipe = match_files(read_recipe(text, LIMITS), Nothing())
    except UserError as error:
        assert str(error)
        return
    options = recipe.options
    assert 1 <= options.get("steps", 1) <= LIMITS.max_steps
    assert LIMITS.min_cfg <= options.get("cfg", 7.0) <= LIMITS.max_cfg
    assert 1 <= options["clip_skip"] <= MAX_CLIP_SKIP
    assert options["rng"] in ("GPU", "CPU", "NV")
    assert 0 < options.get("hires_denoise", 0.5) <= 1
    assert 1 <= options.get("hires_scale", 1.0) <= 2
    assert all(isinstance(note, str) and "\n" not in note for note in recipe.notes)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_gives_a_recipe_or_a_user_error(text: str) -> None:
    _check(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=60),
    st.text(max_size=60),
    FIELDS,
    st.sampled_from(["\n", " ", ""]),
)
def test_infotext_shaped_text_gives_a_recipe_or_a_user_error(
    prompt: str, negative: str, fields: list[tuple[str, str]], joint: str
) -> None:
    line = ", ".join(f"{key}: {value}" for key, value in [("Steps", "20"), *fields])
    _check(f"{prompt}{joint}Negative prompt: {negative}{joint}{line}")
