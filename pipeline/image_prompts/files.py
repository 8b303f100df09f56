"""Where the configured IP-Adapter and image encoder are, checked before anything loads (no torch).

Each is a local path or a hub id already in the cache (nothing is downloaded): IP_ADAPTER a
`.safetensors` file or `owner/repo/path/to/file.safetensors`, IMAGE_ENCODER a transformers
`CLIPVisionModelWithProjection` folder or `owner/repo/subfolder`
(h94/IP-Adapter/models/image_encoder).
The adapter's header and the encoder's config.json say whether they fit each other, so a wrong
pair is refused at start, not at the first request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.image_prompts.layout import AdapterLayout, read_adapter_layout
from pipeline.lora.header import read_header

HELP = "docs/image-prompts.md"
NOT_CONFIGURED = f"image prompts need an IP-Adapter: set IP_ADAPTER and IMAGE_ENCODER ({HELP})"
ENCODER_WEIGHTS = "model.safetensors"
ENCODER_CLASS = "CLIPVisionModelWithProjection"


@dataclass(frozen=True)
class ImagePromptFiles:
    """A checked adapter file and encoder folder that fit each other."""

    adapter: Path
    encoder: Path
    layout: AdapterLayout
    encoder_parameters: int
    """The encoder's parameter count, from its weights' header (for the memory model)."""

    @property
    def name(self) -> str:
        return self.adapter.stem


def locate_image_prompt_files(
    adapter_spec: str | None, encoder_spec: str | None
) -> ImagePromptFiles | None:
    """The configured pair, checked; None when neither is set, a UserError for a bad pair."""
    if not adapter_spec and not encoder_spec:
        return None
    if not encoder_spec:
        raise UserError(
            "IP_ADAPTER is set but IMAGE_ENCODER is not: the adapter reads CLIP image "
            "embeddings, so set IMAGE_ENCODER to its encoder (h94/IP-Adapter/models/"
            f"image_encoder for ip-adapter_sd15; {HELP})"
        )
    if not adapter_spec:
        raise UserError(
            "IMAGE_ENCODER is set but IP_ADAPTER is not: set IP_ADAPTER too, or unset both "
            f"({HELP})"
        )
    adapter = _adapter_file(adapter_spec)
    layout = read_adapter_layout(adapter)
    encoder = _encoder_folder(encoder_spec)
    width, parameters = _encoder_facts(encoder, encoder_spec)
    if width != layout.embed_width:
        raise UserError(
            f"IMAGE_ENCODER {encoder_spec} projects images to {width} values but "
            f"{adapter.name} reads {layout.embed_width}: use the encoder the adapter was "
            "trained with (h94/IP-Adapter/models/image_encoder for ip-adapter_sd15)"
        )
    return ImagePromptFiles(adapter, encoder, layout, parameters)


def _adapter_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".safetensors":
        raise UserError(
            f"IP_ADAPTER={spec!r} is not a .safetensors file: only .safetensors is accepted "
            "(.bin files are pickles that can run code)"
        )
    if path.is_file():
        return path
    found = _cached(spec)
    if found is None:
        raise UserError(
            f"IP_ADAPTER={spec!r} is neither a file nor in the hub cache (nothing is "
            "downloaded here): give the path of ip-adapter_sd15.safetensors"
        )
    return found


def _encoder_folder(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    config = _cached(f"{spec.rstrip('/')}/config.json")
    weights = _cached(f"{spec.rstrip('/')}/{ENCODER_WEIGHTS}")
    if config is None or weights is None:
        raise UserError(
            f"IMAGE_ENCODER={spec!r} is neither a folder nor in the hub cache with its "
            f"config.json and {ENCODER_WEIGHTS} (nothing is downloaded here)"
        )
    return config.parent


def _encoder_facts(folder: Path, spec: str) -> tuple[int, int]:
    """(projection width, parameter count) of the encoder folder, or a UserError."""
    config_file = folder / "config.json"
    weights = folder / ENCODER_WEIGHTS
    if not config_file.is_file():
        raise UserError(f"IMAGE_ENCODER={spec!r} has no config.json: it is no transformers folder")
    if not weights.is_file():
        raise UserError(
            f"IMAGE_ENCODER={spec!r} has no {ENCODER_WEIGHTS}: only safetensors weights are "
            "loaded (pytorch_model.bin is a pickle that can run code)"
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise UserError(
            f"IMAGE_ENCODER={spec!r}: its config.json cannot be read ({error})"
        ) from None
    if ENCODER_CLASS not in config.get("architectures", [ENCODER_CLASS]):
        raise UserError(
            f"IMAGE_ENCODER={spec!r} is a {config['architectures'][0]}, not a "
            f"{ENCODER_CLASS}: use h94/IP-Adapter's models/image_encoder"
        )
    width = config.get("projection_dim")
    if not isinstance(width, int):
        raise UserError(f"IMAGE_ENCODER={spec!r}: its config.json names no projection_dim")
    header = read_header(weights)
    parameters = sum(math.prod(entry.shape) for entry in header.tensors.values())
    return width, parameters


def _cached(spec: str) -> Path | None:
    """A hub file `owner/repo/path` from the local cache only, or None."""
    parts = spec.split("/")
    if len(parts) < 3:
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=True)
        )
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None
