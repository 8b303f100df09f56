"""Limits on what one request may ask for, checked the same way for the CLI and Discord."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pipeline.errors import UserError
from pipeline.request import MAX_SEED, GenerationRequest
from pipeline.samplers import find_sampler
from pipeline.sizes import check_size

MAX_CLIP_SKIP = 4


@dataclass(frozen=True)
class Limits:
    max_steps: int = 60
    max_pixels: int = 1024 * 1024
    max_images: int = 4
    min_cfg: float = 1.0
    max_cfg: float = 30.0


def check_request(request: GenerationRequest, limits: Limits) -> GenerationRequest:
    """Return the request with its sampler name normalised, or a UserError saying what to fix."""
    check_size(request.width, request.height, limits.max_pixels)
    if not 1 <= request.steps <= limits.max_steps:
        raise UserError(f"steps {request.steps} is out of range: use 1 to {limits.max_steps}")
    if not 1 <= request.count <= limits.max_images:
        raise UserError(f"count {request.count} is out of range: use 1 to {limits.max_images}")
    if not (math.isfinite(request.cfg) and limits.min_cfg <= request.cfg <= limits.max_cfg):
        raise UserError(
            f"cfg {request.cfg:g} is out of range: use {limits.min_cfg:g} to {limits.max_cfg:g}"
        )
    if not 1 <= request.clip_skip <= MAX_CLIP_SKIP:
        raise UserError(f"clip skip {request.clip_skip} is out of range: use 1 to {MAX_CLIP_SKIP}")
    if not 0 <= request.seed <= MAX_SEED - request.count:
        raise UserError(f"seed {request.seed} is out of range: use 0 to {MAX_SEED - 16}")
    return replace(request, sampler=find_sampler(request.sampler).name)
