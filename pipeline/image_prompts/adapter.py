"""The IP-Adapter on the engine side: load it, encode pictures, and run a batch through it.

diffusers' building blocks do the work: `ImageProjection` turns a CLIP image embedding into 4
context tokens, `IPAdapterAttnProcessor2_0` adds attention over them to each cross-attention
layer, `MultiIPAdapterImageProjection` and the UNet's `added_cond_kwargs={"image_embeds": ...}`
carry the embeddings in. What differs from `load_ip_adapter`: the processors are installed only
for a batch that has image prompts and the UNet's own are put back after (so hypernetwork hooks,
LoRA patches and batches without pictures are untouched), each row gets its own task's
embeddings, and the negative prompt's rows get a zero embedding, as diffusers and A1111 do.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from pipeline.errors import UserError
from pipeline.hashes import legacy_model_hash
from pipeline.image_prompts.files import ImagePromptFiles
from pipeline.image_prompts.layout import TOKENS, check_fits
from pipeline.image_prompts.plan import Slot

IP_PROCESSORS = "ip_image_proj"
"""The UNet config's `encoder_hid_dim_type` that makes it read `image_embeds`."""


@dataclass
class _Weights:
    """The adapter's modules on one device: the projection and each layer's key/value pair."""

    projection: nn.Module
    layers: list[tuple[nn.Linear, nn.Linear]]
    """In the file's order: the UNet's cross-attention processors in diffusers' order."""


class ImagePromptModels:
    """The configured adapter and image encoder, loaded on first use and kept (1.3 GB fp16)."""

    def __init__(self, files: ImagePromptFiles) -> None:
        self.files = files
        self._weights: dict[tuple[torch.device, torch.dtype], _Weights] = {}
        self._encoder: Any = None
        self._processor: Any = None

    @property
    def name(self) -> str:
        return self.files.name

    @functools.cached_property
    def short_hash(self) -> str:
        """The hash A1111's ControlNet extension shows after a model's name (its first
        model hash: 8 hex digits of 64 KiB read at 1 MiB)."""
        return legacy_model_hash(self.files.adapter)

    def encode(self, pictures: Sequence[Path], device: torch.device, dtype: torch.dtype) -> Any:
        """CLIP image embeddings (n, width) of the stored pictures, as the adapter reads them."""
        from pipeline.png import read_png

        encoder, processor = self._image_encoder(device, dtype)
        images = [read_png(path)[0] for path in pictures]
        pixels = processor(images, return_tensors="pt").pixel_values
        return encoder(pixels.to(device, dtype)).image_embeds

    def _image_encoder(self, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        if self._encoder is None:
            encoder: Any = CLIPVisionModelWithProjection.from_pretrained(
                self.files.encoder, local_files_only=True, use_safetensors=True
            )
            size = encoder.config.image_size
            # SD1.5's feature extractor: shortest side to 224, centre crop, OpenAI CLIP's mean
            # and std, which are CLIPImageProcessor's defaults at the encoder's image size.
            self._processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
            self._encoder = encoder.eval().requires_grad_(False)
        self._encoder.to(device, dtype)
        return self._encoder, self._processor

    def weights(self, device: torch.device, dtype: torch.dtype) -> _Weights:
        """The adapter's modules on `device`, read from the file once per device and dtype."""
        key = (device, dtype)
        if key not in self._weights:
            self._weights[key] = _load_weights(self.files, device, dtype)
        return self._weights[key]


def _load_weights(files: ImagePromptFiles, device: torch.device, dtype: torch.dtype) -> _Weights:
    from diffusers.models.embeddings import ImageProjection

    layout = files.layout
    state = load_file(str(files.adapter))
    if not all(torch.isfinite(tensor).all() for tensor in state.values()):
        raise UserError(f"{files.adapter.name} holds NaN or infinite weights: download it again")
    projection: Any = ImageProjection(
        image_embed_dim=layout.embed_width,
        cross_attention_dim=layout.context_width,
        num_image_text_embeds=TOKENS,
    )
    projection.load_state_dict(
        {
            "image_embeds.weight": state["image_proj.proj.weight"],
            "image_embeds.bias": state["image_proj.proj.bias"],
            "norm.weight": state["image_proj.norm.weight"],
            "norm.bias": state["image_proj.norm.bias"],
        }
    )
    layers = []
    for index, width in enumerate(layout.layer_widths):
        pair = []
        for part in ("to_k_ip", "to_v_ip"):
            linear = nn.Linear(layout.context_width, width, bias=False)
            linear.weight.data = state[f"ip_adapter.{2 * index + 1}.{part}.weight"]
            pair.append(linear.to(device, dtype).requires_grad_(False))
        layers.append((pair[0], pair[1]))
    return _Weights(projection.to(device, dtype).eval().requires_grad_(False), layers)


def cross_attention_layers(unet: Any) -> list[tuple[str, int]]:
    """(processor name, hidden width) of each cross-attention layer, in diffusers' order."""
    widths = []
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            attention = unet.get_submodule(name.removesuffix(".processor"))
            widths.append((name, attention.to_k.out_features))
    return widths


@contextlib.contextmanager
def apply_adapter(unet: Any, weights: _Weights, slots: Sequence[Slot]) -> Iterator[None]:
    """Install the adapter's processors, one slot per `slots` entry, for the body only.

    Every slot shares the same modules; each has its own scale per layer (a style slot is 0
    outside the style block). The UNet's own processors, `encoder_hid_proj` and config are
    restored on exit, also when the body raises.
    """
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    own = unet.attn_processors
    layers = dict(zip((n for n, _ in cross_attention_layers(unet)), weights.layers, strict=True))
    processors = dict(own)
    for name, (to_k, to_v) in layers.items():
        processor = IPAdapterAttnProcessor2_0(
            hidden_size=to_k.out_features,
            cross_attention_dim=to_k.in_features,
            num_tokens=[TOKENS] * len(slots),
            scale=[slot.layer_scale(name) for slot in slots],
        )
        processor.to_k_ip = nn.ModuleList([to_k] * len(slots))
        processor.to_v_ip = nn.ModuleList([to_v] * len(slots))
        processors[name] = processor
    own_projection = unet.encoder_hid_proj
    own_type = unet.config.encoder_hid_dim_type
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([weights.projection] * len(slots))
    unet.config.encoder_hid_dim_type = IP_PROCESSORS
    try:
        yield
    finally:
        unet.set_attn_processor(own)
        unet.encoder_hid_proj = own_projection
        unet.config.encoder_hid_dim_type = own_type


def check_unet(models: ImagePromptModels, unet: Any) -> None:
    """Refuse an adapter whose layers do not fit this UNet (another model family)."""
    layers = [width for _, width in cross_attention_layers(unet)]
    layout = models.files.layout
    context = int(unet.config.cross_attention_dim)
    check_fits(layout, models.files.adapter.name, context, layers, layout.embed_width)


class ImagePromptAddition:
    """A `UnetAddition`: each row's image embeddings, one tensor per slot.

    `embeds[s]` is (tasks, 1, width): slot s's mixed embedding per task of the group. Rows of
    the negative prompt get zeros, which the projection turns into the adapter's "no image".
    """

    def __init__(self, embeds: Sequence[torch.Tensor]) -> None:
        self._embeds = tuple(embeds)

    def unet_kwargs(
        self,
        sample: torch.Tensor,
        timestep: Any,
        context: torch.Tensor,
        owners: torch.Tensor,
        call: int,
        negative: torch.Tensor,
    ) -> dict[str, Any]:
        keep = (~negative).to(context.dtype).view(-1, 1, 1)
        rows = [embeds.index_select(0, owners) * keep for embeds in self._embeds]
        return {"added_cond_kwargs": {"image_embeds": rows}}


def mixed_embeds(
    models: ImagePromptModels,
    requests: Sequence[Sequence[Path]],
    slots: Sequence[Slot],
    device: torch.device,
    dtype: torch.dtype,
) -> list[torch.Tensor]:
    """Per slot, each task's weighted mean embedding (tasks, 1, width), from its own pictures.

    `requests[t]` is task t's image prompt pictures in request order; all tasks of a batch
    share the weights (the batch key holds them), so `slots` is the same for each.
    """
    embeds = models.encode([path for paths in requests for path in paths], device, dtype)
    per_task = embeds.view(len(requests), -1, embeds.shape[-1])
    mixed = []
    for slot in slots:
        shares = torch.tensor(slot.mix(), device=device, dtype=dtype).view(1, -1, 1)
        chosen = per_task[:, list(slot.pictures)]
        mixed.append((chosen * shares).sum(dim=1, keepdim=True))
    return mixed
