"""Write trained LoRA layers as kohya sd-scripts does, so A1111, Forge, ComfyUI and Civitai read it.

Names: `lora_unet_<diffusers module path, dots as underscores>` and, for the text encoder,
`lora_te_text_model_<path>`: transformers 4's layout, which sd-scripts writes whatever the
installed transformers (5 dropped the `text_model` level). Each module has `.lora_down.weight`,
`.lora_up.weight` and `.alpha`; the metadata are sd-scripts' `ss_*` strings.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from pipeline.lora.names import TEXT_MODEL, flat_name
from pipeline.training.plan import TrainingPlan

ADAPTER = "default"
"""The adapter name peft gives the layers `inject_adapter_in_model` adds."""


def kohya_module_name(component: str, path: str) -> str:
    """The sd-scripts spelling of a UNet (`unet`) or text-encoder (`te`) module path."""
    if component == "unet":
        return "lora_unet_" + flat_name(path)
    if not path.startswith(TEXT_MODEL):
        path = TEXT_MODEL + path
    return "lora_te_" + flat_name(path)


def kohya_tensors(
    unet: Any, text_encoder: Any | None, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """The down/up/alpha tensors of every peft LoRA layer of the two models."""
    from peft.tuners.lora import LoraLayer

    tensors: dict[str, torch.Tensor] = {}
    for component, model in (("unet", unet), ("te", text_encoder)):
        if model is None:
            continue
        for path, layer in model.named_modules():
            if not isinstance(layer, LoraLayer) or ADAPTER not in layer.lora_A:
                continue
            module: Any = layer  # peft's ModuleDicts are untyped
            name = kohya_module_name(component, path)
            down = module.lora_A[ADAPTER].weight.detach()
            up = module.lora_B[ADAPTER].weight.detach()
            tensors[f"{name}.lora_down.weight"] = down.to("cpu", dtype).contiguous()
            tensors[f"{name}.lora_up.weight"] = up.to("cpu", dtype).contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(float(module.lora_alpha[ADAPTER]), dtype=dtype)
    return tensors


def training_metadata(plan: TrainingPlan, model_name: str, steps: int) -> dict[str, str]:
    """sd-scripts' `ss_*` metadata of a finished (or stopped) run, every value a string."""
    options = plan.options
    images = len(plan.images)
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(options.rank),
        "ss_network_alpha": str(float(options.alpha)),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_sd_model_name": model_name,
        "ss_resolution": str((options.resolution, options.resolution)),
        "ss_enable_bucket": "True",
        "ss_bucket_info": json.dumps(
            {
                "buckets": {
                    str(i): {"resolution": list(size), "count": count}
                    for i, (size, count) in enumerate(sorted(plan.buckets.items()))
                }
            }
        ),
        "ss_tag_frequency": json.dumps(plan.tag_frequency),
        "ss_dataset_dirs": json.dumps(plan.dataset_dirs),
        "ss_num_train_images": str(sum(p.repeats for p in plan.images)),
        "ss_num_batches_per_epoch": str(plan.steps_per_epoch),
        "ss_num_epochs": str(plan.epochs),
        "ss_max_train_steps": str(plan.total_steps),
        "ss_steps": str(steps),
        "ss_epoch": str(min(plan.epochs, -(-steps // plan.steps_per_epoch))),
        "ss_batch_size_per_device": str(options.batch),
        "ss_learning_rate": str(options.lr),
        "ss_unet_lr": str(options.lr),
        "ss_text_encoder_lr": str(options.te_lr),
        "ss_optimizer": "prodigyopt.Prodigy" if options.optimizer == "prodigy" else "AdamW",
        "ss_lr_scheduler": "cosine",
        "ss_noise_offset": str(options.noise_offset),
        "ss_min_snr_gamma": str(options.min_snr_gamma),
        "ss_caption_dropout_rate": str(options.caption_dropout),
        "ss_shuffle_caption": str(options.shuffle_tags),
        "ss_keep_tokens": str(options.keep_tokens),
        "ss_seed": str(options.seed),
        "ss_cache_latents": "True",
        "ss_output_name": options.name,
        "ss_training_comment": f"trigger: {options.trigger}; trained by Dreamcord from "
        f"{images} pictures",
        "ss_training_finished_at": str(datetime.now(UTC).timestamp()),
    }


def export_kohya(unet: Any, text_encoder: Any | None, path: Path, metadata: dict[str, str]) -> Path:
    """Write the file atomically (a temporary name, then a rename)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(kohya_tensors(unet, text_encoder), str(temp), metadata=metadata)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
