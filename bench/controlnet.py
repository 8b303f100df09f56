"""The cost of ControlNet units: seconds per step and peak memory with 0, 1 and 2 units.

Seconds per step are timed between the first and the last step callbacks (at least 2 steps),
so they leave out the prompt encoding and the decode.

Each unit count runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
The ControlNets are built from the model's UNet (`ControlNetModel.from_unet`) and saved as
files: random weights cost what trained ones cost. The first run of each count is a warm-up
(it loads the ControlNets) and is not counted.

`activation_share` measures the per-image memory a unit adds, by counting the live bytes of
every tensor torch makes during one UNet call with and without a ControlNet's residuals: it
does not depend on an allocator, so it holds on the CPU what the device would hold.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
import weakref
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pipeline.backend import ImageTask
from pipeline.hashes import file_sha256
from pipeline.request import ControlUnit, GenerationRequest


@dataclass(frozen=True)
class ControlPlan:
    model: str
    width: int
    height: int
    steps: int
    units: tuple[int, ...]
    repeats: int


class _Files:
    """A FileSource over the bench's ControlNet files."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def names(self) -> Collection[str]:
        return list(self.paths)

    def resolve(self, name: str) -> tuple[Path, str]:
        return self.paths[name], file_sha256(self.paths[name])


def bench_controlnet(plan: ControlPlan) -> dict[str, object]:
    """Per unit count: median seconds per step and the process's peak RSS in MiB."""
    spawn = get_context("spawn")
    runs = {}
    for units in plan.units:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            runs[units] = pool.submit(_measure, plan, units).result()
    base = runs[plan.units[0]]["s_per_step"]
    return {
        "model": plan.model,
        "size": f"{plan.width}x{plan.height}",
        "steps": plan.steps,
        "by_units": {
            str(units): {**run, "step_ratio": round(run["s_per_step"] / base, 2)}
            for units, run in runs.items()
        },
    }


def _measure(plan: ControlPlan, units: int) -> dict[str, float]:
    from diffusers import ControlNetModel
    from PIL import Image
    from safetensors.torch import save_file

    from bench.throughput import build_backend

    engine: Any
    engine, _ = build_backend(plan.model)
    unet = engine.models.get(engine.default_model).pipe.unet
    folder = Path(tempfile.mkdtemp(prefix="bench-controlnet-"))
    paths = {}
    for index in range(units):
        controlnet = ControlNetModel.from_unet(unet)
        state = {key: tensor.contiguous() for key, tensor in controlnet.state_dict().items()}
        paths[f"cn{index}"] = folder / f"cn{index}.safetensors"
        save_file(state, str(paths[f"cn{index}"]))
        del controlnet, state
    engine.controlnets = _Files(paths)
    Image.new("RGB", (plan.width, plan.height), "white").save(folder / "map.png")
    request = GenerationRequest(
        "a lighthouse on a cliff at dusk",
        width=plan.width,
        height=plan.height,
        steps=plan.steps,
        seed=1,
        sampler="Euler",
        controls=tuple(ControlUnit(name, str(folder / "map.png")) for name in paths),
    )
    steps, totals = [], []
    for attempt in range(plan.repeats + 1):
        stamps: list[float] = []
        started = time.perf_counter()
        engine.run(
            [ImageTask("bench", 0, request)],
            lambda *_, stamps=stamps: stamps.append(time.perf_counter()),
            lambda: False,
        )
        if attempt:  # steps between the first and the last callback: no encode, no decode
            steps.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
            totals.append(time.perf_counter() - started)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "s_per_step": round(statistics.median(steps), 4),
        "total_s": round(statistics.median(totals), 2),
        "peak_rss_mib": round(peak_kib / 1024),
    }


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the storages that tensors made inside it keep alive, and the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tensors: dict[int, int] = {}
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                pointer = storage.data_ptr()
                if pointer not in self._tensors:
                    self._tensors[pointer] = 0
                    self._sizes[pointer] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                self._tensors[pointer] += 1
                weakref.finalize(tensor, self._release, pointer)
        return out

    def _release(self, pointer: int) -> None:
        self._tensors[pointer] -= 1
        if not self._tensors[pointer]:
            del self._tensors[pointer]
            self.live -= self._sizes.pop(pointer)


def activation_share(model: str, width: int, height: int) -> dict[str, object]:
    """The peak live bytes of one UNet call (one row) without and with a ControlNet unit."""
    from diffusers import ControlNetModel

    from bench.throughput import build_backend

    engine: Any
    engine, _ = build_backend(model)
    pipe = engine.models.get(engine.default_model).pipe
    unet = pipe.unet
    controlnet = ControlNetModel.from_unet(unet).to(unet.device, unet.dtype).eval()
    width_text = pipe.text_encoder.config.hidden_size
    latents = torch.randn(1, 4, height // 8, width // 8, device=unet.device, dtype=unet.dtype)
    context = torch.randn(1, 77, width_text, device=unet.device, dtype=unet.dtype)
    hint = torch.rand(1, 3, height, width, device=unet.device, dtype=unet.dtype)
    timestep = torch.tensor(500.0)

    def peak(with_unit: bool) -> int:
        with torch.inference_mode(), _LiveBytes() as counter:
            extra = {}
            if with_unit:
                down, mid = controlnet(
                    latents, timestep, context, controlnet_cond=hint, return_dict=False
                )
                extra = {
                    "down_block_additional_residuals": down,
                    "mid_block_additional_residual": mid,
                }
            unet(latents, timestep, encoder_hidden_states=context, **extra)
            return counter.peak

    without, with_unit = peak(False), peak(True)
    return {
        "model": model,
        "size": f"{width}x{height}",
        "unet_call_mib": round(without / 2**20, 1),
        "with_unit_mib": round(with_unit / 2**20, 1),
        "share": round((with_unit - without) / without, 4),
    }
