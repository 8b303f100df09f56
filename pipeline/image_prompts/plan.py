"""How a request's image prompts reach the adapter: slots, their mix and their scales (no torch).

Several pictures of one kind combine as the weighted mean of their CLIP image embeddings (what
ComfyUI IPAdapter's "average" does), and the adapter's scale is the largest of their weights:
so each weight says how much its picture counts in the mix, a picture at weight 0 is as if it
were absent, and the image tokens stay 4 however many pictures there are. (diffusers instead
concatenates each picture's tokens under one scale per adapter, which has no per-picture weight
unless the adapter is loaded once per picture.)

Content pictures and style references are two slots of the same adapter: a content slot feeds
every cross-attention layer, a style slot only the style block. InstantStyle's authors name
`up_blocks.1` as SD1.5's style block (their infer_style_sd15.py; `up_blocks.0.attentions.1`
is SDXL's), which in diffusers' per-block scales is `{"up": {"block_1": w}}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.request import ImagePrompt

STYLE_BLOCK = "up_blocks.1."
"""Attention processors under this prefix are the style layers a `--sref` picture feeds."""


@dataclass(frozen=True)
class Slot:
    """One kind of image prompt: which of the request's pictures, and their weights."""

    style: bool
    pictures: tuple[int, ...]
    """Indices into the request's image prompts."""
    weights: tuple[float, ...]

    @property
    def scale(self) -> float:
        return max(self.weights)

    def mix(self) -> tuple[float, ...]:
        """Each picture's share of the slot's mean embedding (they sum to 1)."""
        total = sum(self.weights)
        return tuple(weight / total for weight in self.weights)

    def layer_scale(self, processor: str) -> float:
        """The adapter's scale at the attention processor named `processor` (diffusers' name)."""
        if self.style and not processor.startswith(STYLE_BLOCK):
            return 0.0
        return self.scale


def plan_slots(prompts: Sequence[ImagePrompt]) -> tuple[Slot, ...]:
    """The content slot, then the style slot, each only when a picture in it has weight.

    No slot at all means the batch runs without the adapter, bit for bit as without pictures.
    """
    slots = []
    for style in (False, True):
        chosen = [(i, p.weight) for i, p in enumerate(prompts) if p.style is style and p.weight > 0]
        if chosen:
            indices, weights = zip(*chosen, strict=True)
            slots.append(Slot(style, tuple(indices), tuple(weights)))
    return tuple(slots)
