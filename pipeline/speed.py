"""Throughput habits of a loaded model on a GPU: memory layout, fused projections, TF32; and
fast mode's token merging, the one lossy trick, for the batches that ask for it.

The habits change what an image looks like by float noise at most; all of them are switched on
together for CUDA (`tune_pipeline`), and each can be checked on the CPU, where they run too.

Fused projections (diffusers' `fuse_qkv_projections`) put each attention layer's query, key and
value weights into one matrix, so an attention layer runs one matmul instead of three. The
separate `to_q`/`to_k`/`to_v` layers stay: LoRAs patch those in place, and `refresh_fused`
copies them into the fused matrix again; hypernetworks hook the key and value layers, so they
run with the fused processors set aside (`unfused`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def tune_pipeline(pipe: Any, fuse_projections: bool = True) -> None:
    """Channels-last UNet and VAE, fused attention projections, TF32 matmuls allowed.

    channels_last lets cuDNN pick its NHWC convolution kernels (the tensor-core layout);
    TF32 only touches fp32 work (the fp32 VAE retry, fp32 models) and leaves fp16/bf16 alone.
    """
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if fuse_projections and _fusable(pipe.unet):
        pipe.unet.fuse_qkv_projections()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _fusable(unet: Any) -> bool:
    """Only diffusers' own SDPA processors have a fused twin (not xformers', not IP-Adapter's)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    return all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())


def is_fused(unet: Any) -> bool:
    return getattr(unet, "original_attn_processors", None) is not None


@torch.no_grad()
def refresh_fused(unet: Any) -> None:
    """Copy each attention layer's q/k/v weights into its fused matrix, in place.

    Called after a LoRA patches (or restores) the separate weights; in place, so a compiled
    UNet sees the same tensors and does not recompile. A no-op on an unfused UNet.
    """
    if not is_fused(unet):
        return
    from diffusers.models.attention_processor import Attention

    for module in unet.modules():
        if not isinstance(module, Attention):
            continue
        fused, parts = (
            (module.to_kv, (module.to_k, module.to_v))
            if module.is_cross_attention
            else (module.to_qkv, (module.to_q, module.to_k, module.to_v))
        )
        torch.cat([part.weight for part in parts], out=fused.weight)
        if fused.bias is not None:
            torch.cat([part.bias for part in parts], out=fused.bias)


def unfuse(model: Any) -> None:
    """Back to the separate projections for good: a copy that trains LoRA layers on `to_q`,
    `to_k` and `to_v` must run them (a text encoder, never fused, is left as it is)."""
    if is_fused(model):
        model.set_attn_processor(dict(model.original_attn_processors))
        model.original_attn_processors = None


@contextmanager
def unfused(unet: Any) -> Iterator[None]:
    """The separate projections for the body (what hooks on `to_k`/`to_v` need), then fused."""
    if not is_fused(unet):
        yield
        return
    fused = unet.attn_processors
    # diffusers' unfuse_qkv_projections would empty its saved dict: set_attn_processor pops it.
    unet.set_attn_processor(dict(unet.original_attn_processors))
    try:
        yield
    finally:
        unet.set_attn_processor(fused)


@contextmanager
def tokens_merged(unet: Any, ratio: float) -> Iterator[None]:
    """Fast mode for the body: tomesd merges `ratio` of the self-attention tokens (0: off).

    As A1111 applies it: merging in self-attention only, at full resolution only, and without
    tomesd's random choice of destination tokens (`use_rand=False`), whose generator would make
    an image depend on the batches that ran before it.
    """
    if not ratio:
        yield
        return
    import tomesd

    tomesd.apply_patch(unet, ratio=ratio, use_rand=False)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)
