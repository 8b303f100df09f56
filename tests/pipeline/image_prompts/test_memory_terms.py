"""The memory model counts the adapter and its image encoder only for batches that use them."""

from __future__ import annotations

from pathlib import Path

from bot.models import memory_model
from bot.settings import load_settings
from pipeline.memory import IMAGE_PROMPT_BYTES, Capacity, MemoryModel, fixed_budget
from pipeline.request import GenerationRequest, ImagePrompt
from tests.ip_adapter_files import tiny_adapter_state, write_adapter, write_encoder

PLAIN = GenerationRequest("a fox")
PROMPTED = GenerationRequest("a fox", image_prompts=(ImagePrompt("/a.png"),))


def test_the_default_term_is_ip_adapter_sd15_and_vit_h_in_fp16() -> None:
    # 22.3M adapter parameters (h94's file) and 632M for ViT-H/14's vision tower: 1.31 GB.
    assert round(IMAGE_PROMPT_BYTES / 1e9, 2) == 1.31


def test_a_tight_budget_fits_fewer_images_with_image_prompts() -> None:
    model = MemoryModel()
    budget = model.batch_bytes(512, 512, 4)
    capacity = Capacity(model, fixed_budget(budget))
    assert capacity.max_batch(PLAIN) == 4
    assert capacity.max_batch(PROMPTED) < 4
    assert model.guide_bytes(PLAIN) == 0


def test_the_configured_files_set_the_term_from_their_parameter_counts(tmp_path: Path) -> None:
    from transformers import CLIPVisionModelWithProjection

    adapter = write_adapter(tmp_path / "adapter")
    encoder = write_encoder(tmp_path / "encoder")
    settings = load_settings(None, ip_adapter=str(adapter), image_encoder=str(encoder))
    vision = CLIPVisionModelWithProjection.from_pretrained(encoder)
    expected = sum(t.numel() for t in tiny_adapter_state().values()) + vision.num_parameters()
    assert memory_model(settings).image_prompt_bytes == 2 * expected
