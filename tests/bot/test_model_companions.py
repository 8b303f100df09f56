"""Which inpainting model an edit runs on: the model's sidecar names it, or the convention
`<name>-inpainting` in MODELS_DIR."""

from pathlib import Path

import pytest

from bot.models import companion_of
from bot.settings import Settings, load_settings
from pipeline.errors import UserError

CONFIGURED = ("tiny", "dreamshaper", "dreamshaper-inpainting", "repainter", "anything-v5")


@pytest.fixture
def models(tmp_path: Path) -> Settings:
    for name in CONFIGURED[1:]:
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    return load_settings(None, model="tiny", models_dir=tmp_path)


def test_a_model_with_an_inpainting_sibling_edits_on_it(models: Settings) -> None:
    assert companion_of(models, "dreamshaper", CONFIGURED) == "dreamshaper-inpainting"


def test_a_sidecar_names_the_companion_over_the_convention(models: Settings) -> None:
    assert models.models_dir is not None
    (models.models_dir / "dreamshaper.json").write_text('{"inpainting": "repainter"}')
    assert companion_of(models, "dreamshaper", CONFIGURED) == "repainter"


def test_a_model_without_a_companion_edits_on_itself(models: Settings) -> None:
    assert companion_of(models, "anything-v5", CONFIGURED) is None
    assert companion_of(models, "default", CONFIGURED) is None
    assert companion_of(models, "dreamshaper-inpainting", CONFIGURED) is None


def test_the_default_model_finds_its_sibling_under_its_own_name(models: Settings) -> None:
    assert companion_of(models, "default", (*CONFIGURED, "tiny-inpainting")) == "tiny-inpainting"


@pytest.mark.parametrize("value", ['"missing-model"', "3"])
def test_a_sidecar_naming_an_unknown_companion_names_the_file_and_the_fix(
    models: Settings, value: str
) -> None:
    assert models.models_dir is not None
    (models.models_dir / "anything-v5.json").write_text(f'{{"inpainting": {value}}}')
    with pytest.raises(UserError, match=r"anything-v5\.json: inpainting is .* not a configured"):
        companion_of(models, "anything-v5", CONFIGURED)


def test_the_catalog_finds_a_companion_by_any_letter_case_and_none_for_an_inpainting_model(
    models: Settings,
) -> None:
    from bot.catalog import ModelCatalog, ModelInfo

    refusal = "dreamshaper-inpainting is an SD1.5 inpainting checkpoint"
    infos = tuple(
        ModelInfo(name, "checkpoint file", refusal if name.endswith("-inpainting") else None)
        for name in CONFIGURED
    )
    catalog = ModelCatalog(models, guild=None, models=infos, configured="tiny")  # type: ignore[arg-type]
    assert catalog.companion_of("DreamShaper") == "dreamshaper-inpainting"
    assert catalog.companion_of("dreamshaper-inpainting") is None
    assert catalog.companion_of("anything-v5") is None
