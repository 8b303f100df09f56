"""Pickles as the outside world writes them, good and hostile, for the `convert` tests.

Good files are `torch.save` of the dicts A1111, diffusers, BasicSR, Lightning and kohya save,
with their key names and realistic shapes. Hostile files try to run code when unpickled: each
one's payload would create `marker`, so a test proves safety by the marker's absence.
"""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

SD1_WIDTH = 768
HYPERNETWORK_WIDTHS = (320, 640)
"""Two of the five widths A1111 trains (320, 640, 768, 1024, 1280), to keep the file small."""


def a1111_embedding(path: Path, vectors: int = 6, seed: int = 0) -> torch.Tensor:
    """A1111's textual inversion `.pt` (`textual_inversion.py`, `Embedding.save`)."""
    params = torch.randn(vectors, SD1_WIDTH, generator=torch.Generator().manual_seed(seed))
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": nn.Parameter(params.clone())},
            "name": path.stem,
            "step": 1500,
            "sd_checkpoint": "e1441589a6",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        path,
    )
    return params


def diffusers_embedding(path: Path, token: str = "<cat-toy>") -> torch.Tensor:
    """diffusers' `learned_embeds.bin` from `textual_inversion.py`: `{token: vector}`."""
    vector = torch.randn(SD1_WIDTH, generator=torch.Generator().manual_seed(1))
    torch.save({token: vector}, path)
    return vector


class HypernetworkModule(nn.Module):
    """A1111's `HypernetworkModule`: `linear` is a Sequential of Linear, norm and activation."""

    def __init__(self, width: int, structure: list[float], layer_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(len(structure) - 1):
            into, out = int(width * structure[index]), int(width * structure[index + 1])
            layers.append(nn.Linear(into, out))
            if index < len(structure) - 2:
                layers.append(nn.SiLU())
            if layer_norm:
                layers.append(nn.LayerNorm(out))
        self.linear = nn.Sequential(*layers)


def a1111_hypernetwork(path: Path) -> dict[Any, Any]:
    """What `Hypernetwork.save` writes: per width a (key, value) pair of state dicts, and fields."""
    structure = [1, 2, 1]
    saved: dict[Any, Any] = {
        width: (
            HypernetworkModule(width, structure, True).state_dict(),
            HypernetworkModule(width, structure, True).state_dict(),
        )
        for width in HYPERNETWORK_WIDTHS
    }
    saved |= {
        "step": 4000,
        "name": path.stem,
        "layer_structure": structure,
        "activation_func": "swish",
        "is_layer_norm": True,
        "weight_initialization": "Normal",
        "sd_checkpoint": "e1441589a6",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
        "activate_output": False,
        "use_dropout": False,
        "dropout_structure": [0, 0, 0],
        "last_layer_dropout": False,
        "optional_info": None,
    }
    torch.save(saved, path)
    return saved


def ema_name(key: str) -> str:
    """LDM's EMA copy of a weight: `model_ema.` and the name after `model.` without dots."""
    return "model_ema." + key.removeprefix("model.").replace(".", "")


def lightning_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A `.ckpt` as LDM training leaves it: Lightning's wrapper, EMA copies and counters."""
    ema = {ema_name(key): t.clone() for key, t in state.items() if key.startswith("model.")}
    ema |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7)}
    torch.save(
        {"state_dict": {**state, **ema}, "global_step": 470000, "epoch": 5},
        path,
    )


def kohya_lora_tensors(dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Two SD1.5 modules by kohya's names (sd-scripts `networks/lora.py`), rank 4."""
    generator = torch.Generator().manual_seed(2)
    modules = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (320, 768),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    }
    tensors = {}
    for name, (out, into) in modules.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, into, generator=generator).to(dtype)
        tensors[f"{name}.lora_up.weight"] = torch.randn(out, 4, generator=generator).to(dtype)
        tensors[f"{name}.alpha"] = torch.tensor(2.0, dtype=dtype)
    return tensors


def peft_lora_tensors() -> dict[str, torch.Tensor]:
    """diffusers' PEFT names, as in `pytorch_lora_weights.bin`, rank 4."""
    generator = torch.Generator().manual_seed(3)
    module = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"
    return {
        f"{module}.lora_A.weight": torch.randn(4, SD1_WIDTH, generator=generator),
        f"{module}.lora_B.weight": torch.randn(320, 4, generator=generator),
    }


# Hostile files.


class RunsCode:
    """Unpickling this calls `call(*args)`: the classic malicious `.ckpt` payload."""

    def __init__(self, call: Any, *args: Any) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.call, self.args


class Custom:
    """A class of the trainer's own, as careless scripts save with the weights."""

    def __init__(self) -> None:
        self.learning_rate = 1e-4


def payloads(marker: Path) -> dict[str, RunsCode]:
    """Ways to create `marker` on load: a shell, Python's exec, a subprocess."""
    return {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "builtins.exec": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": RunsCode(subprocess.call, ["touch", str(marker)]),
    }


def torch_saved(path: Path, payload: object) -> Path:
    """The payload hidden in an otherwise normal state dict, saved by `torch.save`."""
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "extra": payload}, path)
    return path


def bare_pickle(path: Path, payload: object, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    return path


def zip_with_data_pkl(path: Path, data_pkl: bytes) -> Path:
    """A genuine torch.save archive whose `data.pkl` was swapped for `data_pkl`."""
    genuine = path.with_name("genuine.pt")
    torch.save({"weight": torch.zeros(2)}, genuine)
    with zipfile.ZipFile(genuine) as source, zipfile.ZipFile(path, "w") as target:
        for member in source.infolist():
            is_pickle = member.filename.endswith("/data.pkl")
            target.writestr(member, data_pkl if is_pickle else source.read(member))
    genuine.unlink()
    return path


def legacy_claiming(path: Path, elements: int) -> Path:
    """A pre-1.6 `torch.save` file whose storage claims `elements` floats it does not hold.

    The legacy loader allocates what the pickle claims before reading any data.
    """
    torch.save(OrderedDict(weight=torch.zeros(1234)), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    claim = b"M" + (1234).to_bytes(2, "little")  # BININT2, first seen in the storage's id
    path.write_bytes(data.replace(claim, b"J" + elements.to_bytes(4, "little"), 1))
    return path
