"""The compiled path (COMPILE=auto|max): the UNet, and with max the VAE decoder, through
`torch.compile`, one static graph per shape bucket, used only once that bucket is warm.

Why static buckets rather than a batch dimension marked dynamic: a static graph is what
inductor's max-autotune and CUDA graphs want (both fix every shape), and a Discord studio asks
for few shapes: the planner's batch sizes at the default size. A batch between two buckets is
padded to the larger one with empty rows (rows of a UNet call do not see each other: group
norms and attention are per row), so eight buckets serve every batch of up to 16 images.

A shape without a warm bucket runs eager: a request never waits for a compile. Warming runs on
the model thread one bucket at a time (`warm_ups`), so batches run eagerly in between.

Nothing a batch does recompiles a warm bucket: LoRAs patch the same weight tensors in place
(`pipeline.speed.refresh_fused` keeps the fused projections in step), and the steps' timesteps
go in as 0-d float32 tensors, not as Python numbers dynamo would specialise on. What would change
the graph (hypernetwork hooks, IP-Adapter processors, ControlNet residuals) runs eager.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

COMPILE_MODES = ("off", "auto", "max")
TEXT_TOKENS = 77
"""One chunk of prompt: longer prompts (154, 231 tokens) run eager."""
RECOMPILE_LIMIT = 64
"""dynamo keeps 8 graphs per function by default; each bucket of each model is one."""


@dataclass(frozen=True)
class Bucket:
    """One compiled shape: UNet rows (prompt and negative of each image) at a latent size."""

    rows: int
    latent_height: int
    latent_width: int


def row_buckets(max_batch: int) -> tuple[int, ...]:
    """The UNet row counts to compile for batches of 1 to `max_batch` images: twice the powers
    of two up to the one that covers `max_batch` (CFG runs prompt and negative together)."""
    top = 1 << math.ceil(math.log2(max(1, max_batch)))
    return tuple(2 * (1 << power) for power in range(top.bit_length()))


def resolve_mode(setting: str, device: str) -> str:
    """The mode that runs here: auto compiles on CUDA only (on the CPU it costs more than it
    saves), max compiles wherever it is asked."""
    if setting == "auto":
        return "auto" if device == "cuda" else "off"
    return setting


def use_compile_cache(folder: str) -> None:
    """Keep inductor's compiled kernels in `folder` (under DATA_DIR), so restarts are fast."""
    import os

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", folder)


class CompiledUnet:
    """Calls the UNet like a diffusers UNet (`.sample` on the result), compiled where warm."""

    def __init__(self, unet: Any, mode: str, buckets: Sequence[Bucket]) -> None:
        import torch._dynamo.config as dynamo

        dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
        dynamo.accumulated_recompile_limit = max(
            dynamo.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT
        )
        self.unet = unet
        self.buckets = tuple(sorted(buckets, key=lambda b: b.rows))
        self._max = mode == "max" and unet.device.type == "cuda"
        mode_name = "max-autotune" if self._max else None  # max-autotune brings CUDA graphs
        self._compiled = torch.compile(unet, dynamic=False, fullgraph=True, mode=mode_name)
        self._warm: set[Bucket] = set()

    @property
    def warm(self) -> frozenset[Bucket]:
        return frozenset(self._warm)

    def warm_up(self, bucket: Bucket) -> None:
        """Compile one bucket (runs the UNet on zeros; on the model thread)."""
        unet = self.unet
        shape = (bucket.rows, unet.config.in_channels, bucket.latent_height, bucket.latent_width)
        width = int(unet.config.cross_attention_dim)
        # Inside inference mode, as the engine's calls: dynamo guards on the tensors' kind.
        with torch.inference_mode():
            sample = torch.zeros(shape, device=unet.device, dtype=unet.dtype)
            context = torch.zeros(bucket.rows, TEXT_TOKENS, width, device=unet.device)
            # CUDA graphs record on the second call and replay from the third.
            for _ in range(3 if self._max else 1):
                self._run(sample, 999.0, context.to(unet.dtype))
        self._warm.add(bucket)

    def __call__(
        self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **extra: Any
    ) -> Any:
        bucket = self._bucket(sample, encoder_hidden_states)
        if extra or bucket is None:
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **extra)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        rows = len(sample)
        padded = _padded(sample, bucket.rows), _padded(encoder_hidden_states, bucket.rows)
        out = self._run(padded[0], timestep, padded[1])
        return UNet2DConditionOutput(sample=out[:rows])

    def _bucket(self, sample: torch.Tensor, context: torch.Tensor) -> Bucket | None:
        """The smallest warm bucket that holds these rows at their size, if any."""
        if context.shape[1] != TEXT_TOKENS:
            return None
        height, width = sample.shape[-2:]
        return next(
            (
                b
                for b in self.buckets
                if b in self._warm
                and b.rows >= len(sample)
                and (b.latent_height, b.latent_width) == (height, width)
            ),
            None,
        )

    def _run(self, sample: torch.Tensor, timestep: Any, context: torch.Tensor) -> torch.Tensor:
        step = torch.as_tensor(timestep, device=sample.device).to(torch.float32).reshape(())
        if self._max:  # each call is a new step: its graph may reuse the last call's output
            torch.compiler.cudagraph_mark_step_begin()
        out = self._compiled(sample, step, encoder_hidden_states=context, return_dict=False)
        return out[0]


class CompiledDecoder:
    """The VAE's decoder compiled per decode shape (COMPILE=max), installed as its forward."""

    def __init__(self, vae: Any, shapes: Sequence[tuple[int, int, int]]) -> None:
        decoder = vae.decoder
        eager = type(decoder).forward.__get__(decoder)
        self._eager: Callable[..., torch.Tensor] = eager
        self._compiled = torch.compile(eager, dynamic=False, fullgraph=True)
        self.shapes = tuple(shapes)
        """(images, latent height, latent width) of each decode to compile."""
        self._warm: set[tuple[int, int, int]] = set()
        self._vae = vae
        decoder.forward = self

    def warm_up(self, shape: tuple[int, int, int]) -> None:
        vae = self._vae
        channels = vae.config.latent_channels
        with torch.inference_mode():
            z = torch.zeros(shape[0], channels, *shape[1:], device=vae.device, dtype=vae.dtype)
            self._compiled(z)
        self._warm.add(shape)

    @property
    def cold(self) -> list[tuple[int, int, int]]:
        """The shapes not compiled yet."""
        return [shape for shape in self.shapes if shape not in self._warm]

    def __call__(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        key = (z.shape[0], z.shape[2], z.shape[3])
        if args or kwargs or key not in self._warm or z.dtype != self._vae.dtype:
            return self._eager(z, *args, **kwargs)
        return self._compiled(z)


def _padded(rows: torch.Tensor, count: int) -> torch.Tensor:
    missing = count - len(rows)
    if not missing:
        return rows
    return torch.cat([rows, rows.new_zeros(missing, *rows.shape[1:])])


class CompiledModels:
    """The compiled parts of each loaded model, built on first use, and their warm-ups.

    `sizes` are the image sizes (width, height) to warm, `rows` the UNet row counts
    (`row_buckets` of the planner's cap), and `decode_batch` how many images the engine decodes
    a VAE call (the decoder's shapes).
    """

    def __init__(
        self,
        mode: str,
        sizes: Sequence[tuple[int, int]],
        rows: Sequence[int],
        decode_batch: Callable[[int], int] = lambda images: 1,
    ) -> None:
        self.mode = mode
        self.sizes = tuple(sizes)
        self.rows = tuple(rows)
        self._decode_batch = decode_batch
        self._unets: dict[int, CompiledUnet] = {}

    def unet(self, pipe: Any) -> CompiledUnet:
        """The pipeline's compiled UNet (made, not warmed, on first call)."""
        key = id(pipe.unet)
        if key not in self._unets:
            buckets = [Bucket(r, h // 8, w // 8) for w, h in self.sizes for r in self.rows]
            self._unets[key] = CompiledUnet(pipe.unet, self.mode, buckets)
            if self.mode == "max":
                shapes = {
                    (self._decode_batch(r // 2), h // 8, w // 8)
                    for w, h in self.sizes
                    for r in self.rows
                }
                CompiledDecoder(pipe.vae, sorted(shapes))
        return self._unets[key]

    def warm_next(self, pipe: Any) -> bool:
        """Compile the next cold bucket of `pipe`, smallest first (a lone request's first);
        False when all are warm. One bucket a call, so batches run between them."""
        unet = self.unet(pipe)
        if cold := [bucket for bucket in unet.buckets if bucket not in unet.warm]:
            unet.warm_up(cold[0])
            return True
        decoder = pipe.vae.decoder.forward
        cold_shapes = getattr(decoder, "cold", ())
        if cold_shapes:
            decoder.warm_up(cold_shapes[0])
            return True
        return False
