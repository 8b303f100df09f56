"""Memory calibration on a real card (`python -m bench calibrate`): fit the memory model to the
peaks of small batches, as the bot does at start, then compare its predictions for large ones
with their measured peaks (issue 23: batch 8 and 16 within 15%)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.throughput import build_backend
from pipeline.errors import UserError

GIB = 2**30
TOLERANCE = 0.15


def bench_calibrate(
    model: str,
    width: int = 512,
    height: int = 512,
    fit: Sequence[int] = (1, 2),
    check: Sequence[int] = (8, 16),
) -> dict[str, Any]:
    """The fitted model and, per checked batch size, predicted and measured peak GiB."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("bench calibrate measures CUDA memory: run it on a machine with a GPU")
    engine, capacity = build_backend(model)
    fitted = capacity.calibrate(engine.measure_peak, width, height, fit)
    checks = []
    for batch in check:
        predicted = fitted.batch_bytes(width, height, batch)
        measured = engine.measure_peak(batch, width, height)
        checks.append(
            {
                "batch": batch,
                "decode_per_call": fitted.decode_batch(batch),
                "predicted_gib": round(predicted / GIB, 2),
                "measured_gib": round(measured / GIB, 2),
                "error": round(predicted / measured - 1, 3),
            }
        )
    return {
        "bench": "calibrate",
        "device": torch.cuda.get_device_name(),
        "size": f"{width}x{height}",
        "fitted_on": list(fit),
        "fixed_gib": round(fitted.fixed_bytes / GIB, 2),
        "per_image_gib": round(fitted.image_bytes_per_pixel * width * height / GIB, 3),
        "checks": checks,
        "within_15_percent": all(abs(row["error"]) <= TOLERANCE for row in checks),
    }
