"""Recognise what a loaded pickle holds and lay it out as Dreamcord's loaders read it.

Runs in the sandboxed child only, on the object `torch.load(weights_only=True)` returned. Each
kind keeps the names its `.safetensors` form uses in the wild: A1111's `emb_params` for
embeddings, the flat state dict for upscalers, checkpoints and LoRAs, and the agreed layout of
`hypernetwork` for hypernetworks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.convert import hypernetwork
from pipeline.errors import UserError
from pipeline.lora.embeddings import A1111_KEY
from pipeline.lora.keys import parse_key

PLAIN = (dict, OrderedDict, list, tuple, str, int, float, bool, type(None))
TENSORS = (torch.Tensor, torch.nn.Parameter)
LDM_UNET = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
"""A VAE's own weights; training files also carry `loss.*` (discriminator, LPIPS) and EMA."""
UPSCALER_WRAPPERS = ("params_ema", "params")
"""BasicSR saves `{"params_ema": ...}` and/or `{"params": ...}`; the EMA weights are the release."""
UPSCALER_KEYS = ("conv_first.weight", "model.0.weight")
_MODULE_ENDINGS = (".weight", ".bias")


@dataclass(frozen=True)
class Converted:
    """What the file was, the tensors to write, and facts for the report (JSON-friendly)."""

    kind: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def check_plain(obj: object, name: str) -> None:
    """Refuse anything but tensors and plain containers, wherever it sits (cycles included)."""
    pending, seen = [obj], set()
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor) and type(item) in TENSORS:
            if item.layout != torch.strided:
                raise UserError(f"{name} holds a {item.layout} tensor: refused")
        elif type(item) not in PLAIN:
            raise UserError(f"{name} holds a {type(item).__qualname__}, not plain data: refused")
        elif isinstance(item, dict):
            for key in item:
                if type(key) not in (str, int):
                    raise UserError(f"{name} has a {type(key).__name__} key: refused")
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def recognise(obj: object, name: str) -> Converted:
    """The conversion of `obj`, or a UserError that says what was found instead."""
    if not isinstance(obj, dict):
        raise UserError(f"{name} holds a {type(obj).__name__}, not a dict of weights: refused")
    kinds = (
        _a1111_embedding,
        _hypernetwork,
        _checkpoint,
        _vae,
        _upscaler,
        _diffusers_embedding,
        _lora,
    )
    for convert in kinds:
        converted = convert(obj, name)
        if converted is not None:
            return converted
    keys = ", ".join(repr(key) for key in list(obj)[:6]) + (" ..." if len(obj) > 6 else "")
    raise UserError(
        f"{name} is none of what convert knows (embedding, hypernetwork, checkpoint, upscaler, "
        f"LoRA); its top-level keys: {keys or 'none'}"
    )


def _a1111_embedding(obj: dict[Any, Any], name: str) -> Converted | None:
    params = obj.get("string_to_param")
    if params is None:
        return None
    if not isinstance(params, dict) or len(params) != 1:
        raise UserError(f"{name}: an A1111 embedding needs exactly one string_to_param entry")
    (vectors,) = params.values()
    if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2):
        raise UserError(f"{name}: its string_to_param entry is not a vectors tensor")
    vectors = vectors.reshape(-1, vectors.shape[-1])
    facts = {"vectors": vectors.shape[0], "width": vectors.shape[1]}
    if isinstance(obj.get("name"), str):
        facts["name"] = obj["name"]
    return Converted("embedding", {A1111_KEY: vectors}, facts=facts)


def _diffusers_embedding(obj: dict[Any, Any], name: str) -> Converted | None:
    """diffusers' `learned_embeds.bin`: `{token: vectors}` with the token as the only key."""
    if len(obj) != 1:
        return None
    ((token, vectors),) = obj.items()
    if (
        not isinstance(token, str)
        or not isinstance(vectors, torch.Tensor)
        or vectors.ndim not in (1, 2)
        or parse_key(token) is not None
        or token.endswith(_MODULE_ENDINGS)
    ):
        return None
    facts = {"vectors": 1 if vectors.ndim == 1 else vectors.shape[0], "width": vectors.shape[-1]}
    return Converted("embedding", {token: vectors}, facts={**facts, "token": token})


def _hypernetwork(obj: dict[Any, Any], name: str) -> Converted | None:
    if not hypernetwork.is_hypernetwork(obj):
        return None
    tensors, metadata = hypernetwork.flatten(obj, name)
    facts = {"widths": hypernetwork.widths(tensors), "tensors": len(tensors)}
    if isinstance(obj.get("name"), str):
        facts["name"] = obj["name"]
    return Converted("hypernetwork", tensors, metadata, facts)


def _checkpoint(obj: dict[Any, Any], name: str) -> Converted | None:
    """An LDM checkpoint, wrapped by Lightning in `state_dict` or flat; EMA copies are dropped."""
    wrapped = isinstance(obj.get("state_dict"), dict)
    state: dict[Any, Any] = obj["state_dict"] if wrapped else obj
    if not any(isinstance(key, str) and key.startswith(LDM_UNET) for key in state):
        return None
    tensors = {
        key: value
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and not str(key).startswith(EMA_PREFIX)
    }
    ema = sum(1 for key in state if str(key).startswith(EMA_PREFIX))
    facts = {
        "tensors": len(tensors),
        "dropped_ema": ema,
        "dropped_other": len(state) - len(tensors) - ema,
        "ignored_fields": sorted(str(key) for key in obj if key != "state_dict") if wrapped else [],
    }
    return Converted("checkpoint", tensors, facts=facts)


def _vae(obj: dict[Any, Any], name: str) -> Converted | None:
    """A VAE on its own (`vae-ft-mse-840000-ema-pruned.ckpt`), with or without the wrapper."""
    state: dict[Any, Any] = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    if not {"encoder.conv_in.weight", "decoder.conv_out.weight"} <= state.keys():
        return None
    tensors = {
        key: value
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and str(key).startswith(VAE_PARTS)
    }
    return Converted(
        "vae", tensors, facts={"tensors": len(tensors), "dropped": len(state) - len(tensors)}
    )


def _upscaler(obj: dict[Any, Any], name: str) -> Converted | None:
    state: Mapping[Any, Any] = obj
    for wrapper in UPSCALER_WRAPPERS:
        if isinstance(obj.get(wrapper), dict):
            state = obj[wrapper]
            break
    if not any(key in state for key in UPSCALER_KEYS):
        return None
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if len(tensors) != len(state):
        raise UserError(f"{name}: an upscaler state dict should hold tensors only")
    layout = "ESRGAN" if "model.0.weight" in tensors else "BasicSR"
    return Converted("upscaler", tensors, facts={"tensors": len(tensors), "layout": layout})


def _lora(obj: dict[Any, Any], name: str) -> Converted | None:
    """kohya or PEFT names on flat tensors; `inspect_file` judges the result as for any LoRA."""
    if not all(isinstance(value, torch.Tensor) for value in obj.values()):
        return None
    if not any(isinstance(key, str) and parse_key(key) for key in obj):
        return None
    return Converted("lora", dict(obj), facts={"tensors": len(obj)})


def own_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous tensors that each own their storage, as `save_file` requires.

    Only views, non-contiguous and shared tensors are cloned, so memory stays near the file size.
    """
    owned, storages = {}, set()
    for key, tensor in tensors.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        if not tensor.is_contiguous() or not whole or storage.data_ptr() in storages:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        storages.add(tensor.untyped_storage().data_ptr())
        owned[key] = tensor
    return owned
