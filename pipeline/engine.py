"""The SD1.5 engine: runs one batch of compatible image tasks, step by step, on the worker thread.

It reads like a recipe: encode the prompts, prepare the noise, loop over the steps, decode. The
model parts come from a `ModelManager`, so the same code runs the tiny model and full SD1.5.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.backend import (
    BatchInterrupted,
    ImageResult,
    ImageTask,
    OutOfDeviceMemory,
    StepCallback,
)
from pipeline.conditioning import encode_chunks, pad_chunks, split_into_chunks
from pipeline.errors import UserError
from pipeline.infotext import ImageIdentity, build_parameters
from pipeline.models import LoadedModel, ModelManager
from pipeline.preview import latent_previews
from pipeline.prompt.attention import parse_prompt_attention
from pipeline.request import GenerationRequest
from pipeline.samplers import find_sampler

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

LATENT_FACTOR = 8


@dataclass
class _Group:
    """Tasks whose prompts encode to the same number of chunks, so they can share a UNet call."""

    tasks: list[ImageTask]
    cond: list[torch.Tensor]
    uncond: list[torch.Tensor]


class Engine:
    """Implements `pipeline.backend.Backend` with diffusers models on one device."""

    def __init__(self, models: ModelManager) -> None:
        self.models = models

    def run(
        self,
        tasks: Sequence[ImageTask],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> list[ImageResult]:
        import torch

        request = tasks[0].request
        find_sampler(request.sampler)
        started = time.perf_counter()
        model = self.models.get(request.model)
        try:
            with torch.inference_mode():
                groups = self._encode(model, tasks)
                encoded = time.perf_counter()
                total = len(groups) * self._step_count(model, request)
                done = 0
                results: list[ImageResult] = []
                for group in groups:

                    def step(index: int, latents: torch.Tensor, offset: int = done) -> None:
                        on_step(offset + index, total, lambda: latent_previews(latents))

                    latents = self._denoise(model, group, step, should_stop)
                    done += self._step_count(model, request)
                    if should_stop():
                        raise BatchInterrupted
                    images = [decode_latent(model.pipe.vae, latent) for latent in latents]
                    results += self._results(model, group.tasks, images)
        except torch.OutOfMemoryError as error:
            _free_device_memory()
            raise OutOfDeviceMemory(str(error)) from None
        timings = {
            "encode_s": round(encoded - started, 4),
            "total_s": round(time.perf_counter() - started, 4),
        }
        for result in results:
            result.timings.update(timings)
        return results

    def _step_count(self, model: LoadedModel, request: GenerationRequest) -> int:
        scheduler = make_scheduler(model, request, seed=0)
        scheduler.set_timesteps(request.steps)
        return len(scheduler.timesteps)

    def _encode(self, model: LoadedModel, tasks: Sequence[ImageTask]) -> list[_Group]:
        """Encode every prompt once, then group tasks by their padded chunk count."""
        pipe = model.pipe
        cache: dict[tuple[str, int], torch.Tensor] = {}

        def encode(text: str, clip_skip: int) -> torch.Tensor:
            if (text, clip_skip) not in cache:
                chunks, _ = split_into_chunks(parse_prompt_attention(text), pipe.tokenizer)
                cache[text, clip_skip] = encode_chunks(
                    chunks, pipe.text_encoder, pipe.tokenizer, clip_skip
                )
            return cache[text, clip_skip]

        groups: dict[int, _Group] = {}
        for task in tasks:
            request = task.request
            cond = encode(request.prompt, request.clip_skip)
            uncond = encode(request.negative, request.clip_skip)
            chunks = max(cond.shape[1], uncond.shape[1]) // 77
            empty = encode("", request.clip_skip)
            group = groups.setdefault(chunks, _Group([], [], []))
            group.tasks.append(task)
            group.cond.append(pad_chunks(cond, chunks, empty))
            group.uncond.append(pad_chunks(uncond, chunks, empty))
        return list(groups.values())

    def _denoise(
        self,
        model: LoadedModel,
        group: _Group,
        on_step: Callable[[int, torch.Tensor], None],
        should_stop: Callable[[], bool],
    ) -> torch.Tensor:
        """The sampling loop with classifier-free guidance; returns the final latents."""
        import torch

        unet = model.pipe.unet
        request = group.tasks[0].request
        device, dtype = model.pipe.device, unet.dtype
        scheduler = make_scheduler(model, request, seed=group.tasks[0].seed)
        scheduler.set_timesteps(request.steps, device=device)
        generators = [torch.Generator("cpu").manual_seed(task.seed) for task in group.tasks]
        step_kwargs = {"generator": generators} if _takes_generator(scheduler) else {}
        latents = prepare_noise(group.tasks, request.width, request.height)
        latents = latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
        context = torch.cat([*group.uncond, *group.cond]).to(device=device, dtype=dtype)
        for index, timestep in enumerate(scheduler.timesteps, start=1):
            if should_stop():
                raise BatchInterrupted
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), timestep)
            noise = unet(model_input, timestep, encoder_hidden_states=context).sample
            uncond, cond = noise.chunk(2)
            guided = uncond + request.cfg * (cond - uncond)
            latents = scheduler.step(guided, timestep, latents, **step_kwargs).prev_sample
            on_step(index, latents)
        return latents

    def _results(
        self, model: LoadedModel, tasks: Sequence[ImageTask], images: Sequence[Image.Image]
    ) -> list[ImageResult]:
        results = []
        for task, image in zip(tasks, images, strict=True):
            identity = ImageIdentity(
                seed=task.seed,
                variation_seed=task.variation_seed,
                model_name=model.name,
                model_hash=model.hash,
            )
            results.append(ImageResult(task, image, build_parameters(task.request, identity)))
        return results


def make_scheduler(model: LoadedModel, request: GenerationRequest, seed: int) -> Any:
    """A fresh scheduler for the request's sampler, from the model's own scheduler config."""
    import diffusers

    sampler = find_sampler(request.sampler)
    options = dict(sampler.options)
    if sampler.scheduler == "DPMSolverSDEScheduler":
        options["noise_sampler_seed"] = seed
    scheduler_class = getattr(diffusers, sampler.scheduler)
    return scheduler_class.from_config(model.pipe.scheduler.config, **options)


def _takes_generator(scheduler: Any) -> bool:
    return "generator" in inspect.signature(scheduler.step).parameters


def prepare_noise(tasks: Sequence[ImageTask], width: int, height: int) -> torch.Tensor:
    """Initial noise, made on the CPU from each image's own seed so batching never changes it.

    With a variation seed the noise is the spherical interpolation between the image's noise and
    the variation seed's noise, A1111's "Variation seed strength".
    """
    import torch

    shape = (1, 4, height // LATENT_FACTOR, width // LATENT_FACTOR)

    def noise(seed: int) -> torch.Tensor:
        return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))

    latents = []
    for task in tasks:
        base = noise(task.seed)
        if task.variation_seed is not None:
            base = slerp(task.request.variation_strength, base, noise(task.variation_seed))
        latents.append(base)
    return torch.cat(latents)


def slerp(t: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: keeps the noise's norm, so a blend is still valid noise."""
    import torch

    a, b = start.flatten().double(), end.flatten().double()
    cos_angle = torch.dot(a / a.norm(), b / b.norm()).clamp(-1, 1).item()
    if abs(cos_angle) > 0.9995:
        return (1 - t) * start + t * end
    angle = math.acos(cos_angle)
    blend = (math.sin((1 - t) * angle) * a + math.sin(t * angle) * b) / math.sin(angle)
    return blend.reshape(start.shape).to(start.dtype)


def decode_latent(vae: Any, latent: torch.Tensor) -> Image.Image:
    """Decode one latent to an image, again in fp32 when half precision overflowed.

    The SD1.5 VAE overflows in fp16 on some images: the result is NaN, which would become a black
    image. Decoding one image at a time also keeps the VAE's peak memory to a single image.
    """
    import torch
    from PIL import Image

    scaled = latent.unsqueeze(0) / vae.config.scaling_factor
    image = vae.decode(scaled.to(vae.dtype)).sample
    if _is_broken(image) and vae.dtype != torch.float32:
        log.warning("VAE decode overflowed in %s; decoding again in fp32", vae.dtype)
        with _upcast(vae):
            image = vae.decode(scaled.float()).sample
    if _is_broken(image):
        raise UserError("the image came out empty (NaN) even in fp32: try another seed or VAE")
    pixels = ((image[0].float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), "RGB")


def _is_broken(image: torch.Tensor) -> bool:
    """NaN/Inf anywhere, or an image saturated to pure black, both signs of an fp16 overflow."""
    import torch

    return not bool(torch.isfinite(image).all()) or bool((image <= -1).all())


@contextlib.contextmanager
def _upcast(vae: Any) -> Iterator[None]:
    import torch

    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
