"""The cost of highres fix relative to the base image, measured on the real engine.

Both runs use the same prompt, seed, size and steps; the hires run adds the upscale and the
second pass. The first run of each kind is a warm-up and is not counted.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace

from bench.throughput import build_backend
from pipeline.backend import ImageTask
from pipeline.request import GenerationRequest, HiresSpec


@dataclass(frozen=True)
class HiresPlan:
    model: str
    width: int
    height: int
    steps: int
    scale: float
    hires_steps: int
    upscaler: str
    repeats: int


def bench_hires(plan: HiresPlan) -> dict[str, object]:
    backend, _ = build_backend(plan.model)
    base = GenerationRequest(
        "a lighthouse on a cliff at dusk",
        width=plan.width,
        height=plan.height,
        steps=plan.steps,
        seed=1,
        model=plan.model,
    )
    hires = replace(base, hires=HiresSpec(plan.scale, plan.hires_steps, 0.5, plan.upscaler))

    def seconds(request: GenerationRequest) -> float:
        times = []
        for attempt in range(plan.repeats + 1):
            started = time.perf_counter()
            backend.run([ImageTask("bench", 0, request)], lambda *_: None, lambda: False)
            if attempt:  # the first is the warm-up
                times.append(time.perf_counter() - started)
        return statistics.median(times)

    base_s, hires_s = seconds(base), seconds(hires)
    return {
        "base_s": round(base_s, 4),
        "hires_s": round(hires_s, 4),
        "ratio": round(hires_s / base_s, 2),
        "size": f"{plan.width}x{plan.height}",
        "hires": f"{plan.scale:g}x, {plan.hires_steps} steps, {plan.upscaler}",
    }
