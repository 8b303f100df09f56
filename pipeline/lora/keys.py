"""Tensor names of adapter files: split them into (component, module, family, part).

Which model module a name means is `names.py`'s job; this module only reads the layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# kohya prefix -> component. te1/te2 exist only in SDXL files: parsed so they can be refused.
KOHYA_PREFIXES: dict[str, str] = {
    "lora_unet_": "unet",
    "lora_te1_": "te1",
    "lora_te2_": "te2",
    "lora_te_": "te",
}
PEFT_PREFIXES: dict[str, str] = {"unet.": "unet", "text_encoder_2.": "te2", "text_encoder.": "te"}

# Suffix after the module name -> (family, part). A None family fits any family (the alpha scalar).
KOHYA_SUFFIXES: dict[str, tuple[str | None, str]] = {
    "alpha": (None, "alpha"),
    "dora_scale": (None, "dora_scale"),
    "lora_down.weight": ("lora", "down"),
    "lora_A.weight": ("lora", "down"),
    "lora_B.weight": ("lora", "up"),
    "lora_up.weight": ("lora", "up"),
    "lora_mid.weight": ("lora", "mid"),
    "hada_w1_a": ("loha", "w1_a"),
    "hada_w1_b": ("loha", "w1_b"),
    "hada_w2_a": ("loha", "w2_a"),
    "hada_w2_b": ("loha", "w2_b"),
    "hada_t1": ("loha", "t1"),
    "hada_t2": ("loha", "t2"),
    "lokr_w1": ("lokr", "w1"),
    "lokr_w1_a": ("lokr", "w1_a"),
    "lokr_w1_b": ("lokr", "w1_b"),
    "lokr_w2": ("lokr", "w2"),
    "lokr_w2_a": ("lokr", "w2_a"),
    "lokr_w2_b": ("lokr", "w2_b"),
    "lokr_t2": ("lokr", "t2"),
}
PEFT_SUFFIXES: dict[str, tuple[str | None, str]] = {
    "lora_A.weight": ("peft", "down"),
    "lora_B.weight": ("peft", "up"),
    # diffusers before PEFT (2023): LoRACompatibleLinear and the text encoder's patched layers.
    "lora.down.weight": ("peft", "down"),
    "lora.up.weight": ("peft", "up"),
    "lora_linear_layer.down.weight": ("peft", "down"),
    "lora_linear_layer.up.weight": ("peft", "up"),
    "alpha": (None, "alpha"),
}
_ATTENTION_PROCESSOR = re.compile(
    r"(?:unet\.)?(?P<path>[\w.]+)\.processor\.(?P<layer>to_q|to_k|to_v|to_out)_lora"
    r"\.(?P<part>down|up)\.weight"
)
"""diffusers' LoRA attention processors (`train_dreambooth_lora.py` of 2023): UNet only."""
BUNDLE_PREFIX = "bundle_emb."
"""Embeddings a LoRA carries (`bundle_emb.<token>.string_to_param.*`), usable while it is active."""

COMPONENTS = ("unet", "te")
"""The components an SD1.x model has; te1/te2 mean an SDXL file."""


@dataclass(frozen=True)
class TensorKey:
    """One tensor name split into what it belongs to."""

    component: str
    module: str
    family: str | None
    part: str


def parse_key(key: str) -> TensorKey | None:
    """Split an adapter tensor name, or None when it is not from a known layout."""
    for prefix, component in KOHYA_PREFIXES.items():
        if key.startswith(prefix) and "." in key:
            module, suffix = key[len(prefix) :].split(".", 1)
            if suffix in KOHYA_SUFFIXES and module:
                return TensorKey(component, module, *KOHYA_SUFFIXES[suffix])
    for prefix, component in PEFT_PREFIXES.items():
        if key.startswith(prefix):
            for suffix, meaning in PEFT_SUFFIXES.items():
                if key.endswith("." + suffix) and len(key) > len(prefix) + len(suffix) + 1:
                    module = key[len(prefix) : -len(suffix) - 1]
                    return TensorKey(component, module, *meaning)
    if match := _ATTENTION_PROCESSOR.fullmatch(key):
        layer = "to_out.0" if match["layer"] == "to_out" else match["layer"]
        return TensorKey("unet", f"{match['path']}.{layer}", "peft", match["part"])
    return None
