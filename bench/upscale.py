"""Time and peak memory of tiled upscales, 2x and 4x of one picture, each in its own process.

A fresh process per run, so each peak is that run's own: the peak resident memory (RSS, from
`getrusage`) on the CPU, the device's peak allocation on CUDA. `after_load_mb` is the RSS once
the model is loaded, so the growth the upscale itself causes is `peak - after_load`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.throughput import build_backend
from pipeline.backend import ImageTask
from pipeline.request import GenerationRequest, Mode, TileSpec


@dataclass(frozen=True)
class UpscalePlan:
    model: str
    size: int
    factor: int
    steps: int
    strength: float
    tile: int
    overlap: int
    batch: int


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(plan: UpscalePlan) -> dict[str, object]:
    """One upscale in this process: seconds, peak RSS and device peak."""
    import numpy as np
    from PIL import Image

    backend, _ = build_backend(plan.model)
    after_load = _rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        picture = Path(folder) / "picture.png"
        y, x = np.mgrid[0 : plan.size, 0 : plan.size] / plan.size
        rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 3 * y)], axis=-1) * 255
        Image.fromarray(rgb.astype(np.uint8)).save(picture)
        side = plan.size * plan.factor
        request = GenerationRequest(
            "a castle on a hill, detailed",
            mode=Mode.UPSCALE,
            init_image=str(picture),
            width=side,
            height=side,
            steps=plan.steps,
            strength=plan.strength,
            seed=1,
            model=plan.model,
            tiles=TileSpec(plan.tile, plan.overlap, plan.batch),
        )
        started = time.perf_counter()
        result = backend.run([ImageTask("bench", 0, request)], lambda *_: None, lambda: False)
        seconds = time.perf_counter() - started
    return {
        "model": plan.model,
        "from": f"{plan.size}x{plan.size}",
        "factor": plan.factor,
        "size": f"{result[0].image.width}x{result[0].image.height}",
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(_rss_mb()),
        "after_load_mb": round(after_load),
        "device_peak_mb": result[0].timings.get("peak_memory_mb", 0),
    }


def bench_upscale(plan: UpscalePlan) -> dict[str, object]:
    """2x and 4x of the same picture, each in a fresh process, and how their peaks compare."""
    runs = []
    for factor in (2, 4):
        one = asdict(plan) | {"factor": factor}
        output = subprocess.run(
            [sys.executable, "-m", "bench.upscale", json.dumps(one)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    two, four = runs

    def growth(key: str) -> float | None:
        base = float(two[key]) - float(two["after_load_mb"] if key == "peak_rss_mb" else 0)
        more = float(four[key]) - float(four["after_load_mb"] if key == "peak_rss_mb" else 0)
        return round(more / base, 2) if base > 0 else None

    return {
        "runs": runs,
        "rss_ratio_4x_over_2x": round(float(four["peak_rss_mb"]) / float(two["peak_rss_mb"]), 2),
        "rss_growth_ratio_4x_over_2x": growth("peak_rss_mb"),
        "device_ratio_4x_over_2x": growth("device_peak_mb"),
        "pixel_ratio": 4,
    }


if __name__ == "__main__":
    print(json.dumps(run_once(UpscalePlan(**json.loads(sys.argv[1])))))
