"""Which base model a file was made for, read off its text width; torch-free, for every inspection
(adapters, embeddings, hypernetworks, ControlNets)."""

from __future__ import annotations

SD1_WIDTH = 768
"""Text-encoder width (and cross-attention input) of SD1.x; the tiny model's is 32."""
BASES_BY_WIDTH = {768: "sd1", 1024: "sd2", 1280: "sdxl", 2048: "sdxl"}
BASE_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
"""The safetensors dtypes of trained weights."""
