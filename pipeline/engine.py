"""The SD1.5 engine: runs one batch of compatible image tasks, step by step, on the worker thread.

It reads like a recipe: encode the prompts, prepare the noise, loop over the steps, decode. The
model parts come from a `ModelManager`, so the same code runs the tiny model and full SD1.5.
The batch's LoRAs are patched into the weights around all of it, and its hypernetworks hooked
into the attention layers, and both removed after.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.backend import (
    BatchInterrupted,
    ImageResult,
    ImageTask,
    OutOfDeviceMemory,
    StepCallback,
)
from pipeline.conditioning import encode_together, split_into_chunks
from pipeline.encoding_cache import EncodingCache
from pipeline.errors import UserError
from pipeline.guidance import (
    Encodings,
    Guidance,
    ImageConditioning,
    UnetAddition,
    condition_image,
)
from pipeline.infotext import ImageIdentity, build_parameters
from pipeline.inpaint import (
    EditPicture,
    MaskedLatents,
    call_sigma,
    encode_edits,
    paste_back,
    prepare_edit,
    work_size,
)
from pipeline.limits import find_rng
from pipeline.memory import MemoryModel
from pipeline.models import LoadedModel, ModelManager
from pipeline.preview import latent_previews
from pipeline.prompt.attention import parse_prompt_attention
from pipeline.prompt.editing import Schedule
from pipeline.prompt.schedule import plan_conditioning
from pipeline.request import (
    DEFAULT_STRENGTH,
    EDIT_MODES,
    ControlUnit,
    GenerationRequest,
    HypernetRef,
    LoraRef,
    Mode,
    TileSpec,
)
from pipeline.samplers import effective_schedule, resolve_sampler
from pipeline.sizes import round_to
from pipeline.speed import refresh_fused, tokens_merged, unfused
from pipeline.tiled import GuideFactory, TiledPass, configure_vae_tiles
from pipeline.tiles import tile_count
from pipeline.upscalers import Upscaler, UpscalerCatalog

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.compiled import CompiledModels
    from pipeline.control.loading import ControlNetCache
    from pipeline.image_prompts.adapter import ImagePromptModels
    from pipeline.lora.source import AdapterSource, FileSource
    from pipeline.noise import NoiseSource
    from pipeline.pixel_upscalers import PixelModelCache
    from pipeline.safety import SafetyChecker
    from pipeline.schedules import DiscreteSigmas

log = logging.getLogger(__name__)

LATENT_FACTOR = 8


@dataclass
class _Group:
    """Tasks whose prompts, and whose negatives, encode to the same lengths in every pass.

    At each denoiser call their encodings stack into one batch, so the group shares its UNet
    calls: one when cond and uncond are as long, else one each, as A1111 runs them.
    """

    tasks: list[ImageTask]
    conditioning: list[tuple[ImageConditioning, ...]]
    """Per task: its encodings for each pass."""
    ti_hashes: list[tuple[tuple[str, str], ...]]
    """Per task: the library embeddings its prompt and negative use, with their short hashes."""
    additions: tuple[UnetAddition, ...] = ()
    """What the group's UNet calls take beyond the text: its tasks' image prompts."""


@dataclass(frozen=True)
class _Pass:
    """One denoising pass: the last `run` steps of a schedule of `steps` steps, as A1111 plans.

    A pass that starts from latents (an init image, highres fix's first result) noises them to
    the sigma where those steps begin; a pass from noise runs the whole schedule.
    """

    width: int
    height: int
    steps: int
    run: int
    hires: bool = False
    """Highres fix's second pass, where A1111 softens canny ControlNet units."""


class _Progress:
    """Turns each pass's step numbers into one running count over the whole batch.

    A tiled pass counts in tiles (`per_call` of them each denoiser call), reported as each
    batch of tiles is done, with a preview of the whole canvas.
    """

    def __init__(self, on_step: StepCallback, total: int, per_call: int = 1) -> None:
        self._on_step = on_step
        self._total = total
        self._per_call = per_call
        self._done = 0
        self._in_pass = 0

    def step(self, number: int, latents: torch.Tensor) -> None:
        self._in_pass = number
        if self._per_call == 1:  # a tiled pass has told its last tiles already
            self._on_step(self._done + number, self._total, lambda: latent_previews(latents))

    def tiles(self, call: int, done: int, latents: torch.Tensor) -> None:
        count = (self._done + call) * self._per_call + done
        self._on_step(count, self._total, lambda: latent_previews(latents))

    def finish_pass(self) -> None:
        self._done += self._in_pass
        self._in_pass = 0


class Engine:
    """Implements `pipeline.backend.Backend` with diffusers models on one device.

    `adapters` finds LoRAs and embeddings by name; without it, prompts use neither.
    `upscalers` adds installed ESRGAN-family models to the built-in upscalers; the upscale mode
    enlarges its init image with the catalog's upscale model when there is one.
    `safety` gives every result its verdict, checked over the whole batch at once.
    `controlnets` finds ControlNet model files by name, for requests with control units.
    `image_prompts` is the IP-Adapter and its image encoder, for requests with image prompts.
    `memory` is the memory model the planner uses (it sizes the batched VAE decode).
    `compiled` (COMPILE=auto|max) runs the UNet compiled for the shapes it has warmed.
    """

    def __init__(
        self,
        models: ModelManager,
        adapters: AdapterSource | None = None,
        upscalers: UpscalerCatalog | None = None,
        safety: SafetyChecker | None = None,
        controlnets: FileSource | None = None,
        image_prompts: ImagePromptModels | None = None,
        memory: MemoryModel | None = None,
        compiled: CompiledModels | None = None,
    ) -> None:
        self.models = models
        self.memory = memory or MemoryModel()
        """Says how many images one VAE call decodes."""
        self.compiled = compiled
        self.adapters = adapters
        self.controlnets = controlnets
        self.image_prompts = image_prompts
        self.upscalers = upscalers or UpscalerCatalog()
        self.safety = safety
        self._pixel_models: PixelModelCache | None = None
        self._controlnet_cache: ControlNetCache | None = None
        self._control_hashes: dict[str, str] = {}
        """A1111's short hash of each ControlNet file by sha256: read once per file."""
        self._encodings = EncodingCache()

    @property
    def device(self) -> str:
        return self.models.placement.device

    @property
    def default_model(self) -> str:
        return self.models.default

    def run(
        self,
        tasks: Sequence[ImageTask],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> list[ImageResult]:
        request = tasks[0].request
        resolve_sampler(request.sampler, request.schedule)
        if request.mode not in EDIT_MODES:  # before loading: the file's header says it
            self.models.source(request.model).require_txt2img()
        model = self.models.get(request.model)
        started = time.perf_counter()
        passes = plan_passes(request)
        _reset_peak_memory(model)
        _tile_large_decodes(model, passes[-1], request.tiles)
        out_of_memory = None
        try:
            results, encoded = self._make_images(model, tasks, passes, on_step, should_stop)
            decoded = time.perf_counter()
            results = self._checked(results)
        except torch.OutOfMemoryError as error:
            out_of_memory = str(error)
        if out_of_memory is not None:
            # Raised outside the handler, so it carries no link to the torch error, whose
            # traceback holds the failed attempt's frames and tensors.
            raise OutOfDeviceMemory(out_of_memory)
        timings = {
            "batch_size": len(tasks),
            "encode_s": round(encoded - started, 4),
            "safety_s": round(time.perf_counter() - decoded, 4),
            "total_s": round(time.perf_counter() - started, 4),
            "peak_memory_mb": round(_peak_memory(model) / 2**20),
        }
        for result in results:
            result.timings.update(timings)
        return results

    def _make_images(
        self,
        model: LoadedModel,
        tasks: Sequence[ImageTask],
        passes: list[_Pass],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
    ) -> tuple[list[ImageResult], float]:
        """The batch's images, and when its prompts were encoded (perf_counter)."""
        request = tasks[0].request
        with (
            self._loras_applied(model, request.loras) as (lora_hashes, bundled),
            self._hypernets_applied(model, request.hypernets),
            self._controlnets_placed(model, request.controls) as (controlnets, control_hashes),
            self._image_prompts_applied(model, request) as image_prompted,
            tokens_merged(model.pipe.unet, request.token_merging),
            torch.inference_mode(),
        ):
            groups = self._encode(model, tasks, bundled, lora_hashes)
            for group in groups:
                group.additions += image_prompted(group.tasks)
            encoded = time.perf_counter()
            steps_per_group = sum(self._step_count(model, request, p) for p in passes)
            tiles = tile_count(request)
            progress = _Progress(on_step, len(groups) * steps_per_group * tiles, tiles)
            results = []
            for group in groups:
                images = self._run_group(model, group, passes, progress, should_stop, controlnets)
                results += self._results(model, group, images, lora_hashes, control_hashes)
        return results, encoded

    def warm_up_next(self) -> bool:
        """Compile the default model's next shape bucket (COMPILE); False when none is left."""
        if self.compiled is None:
            return False
        return self.compiled.warm_next(self.models.get(self.default_model).pipe)

    def _denoiser(self, model: LoadedModel, request: GenerationRequest) -> Any:
        """What the step loop calls as the UNet: the compiled one where it may serve.

        Hypernetworks hook the UNet's layers and token merging swaps its blocks' class, which a
        compiled graph would not see."""
        if self.compiled is None or request.hypernets or request.token_merging:
            return model.pipe.unet
        return self.compiled.unet(model.pipe)

    def free_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def measure_peak(self, batch_size: int, width: int = 512, height: int = 512) -> int:
        """Peak device bytes of a real `batch_size` batch (a few steps): memory calibration."""
        request = GenerationRequest("calibration", width=width, height=height, steps=2)
        tasks = [ImageTask("calibration", index, request) for index in range(batch_size)]
        self.run(tasks, lambda *_: None, lambda: False)
        return _peak_memory(self.models.get(request.model))

    @contextlib.contextmanager
    def _loras_applied(
        self, model: LoadedModel, loras: Sequence[LoraRef]
    ) -> Iterator[tuple[tuple[tuple[str, str], ...], dict[str, torch.Tensor]]]:
        """Patch the batch's LoRAs into the model for the body.

        Yields their `Lora hashes` and the embeddings they bundle, which prompts may use while
        the LoRAs are active.
        """
        if not loras:
            yield (), {}
            return
        if self.adapters is None:
            raise UserError("LoRAs are not available here: this engine was built without them")
        from pipeline.lora.patcher import apply_loras

        uses, hashes = self.adapters.loras(loras, _text_width(model))
        bundled = {token: v for adapter, _, _ in uses for token, v in adapter.embeddings.items()}
        unet = model.pipe.unet
        try:
            with apply_loras(unet, model.pipe.text_encoder, uses):
                refresh_fused(unet)
                yield hashes, bundled
        finally:
            refresh_fused(unet)  # the restored weights, into the fused projections too

    @contextlib.contextmanager
    def _hypernets_applied(
        self, model: LoadedModel, hypernets: Sequence[HypernetRef]
    ) -> Iterator[None]:
        """Hook the batch's hypernetworks into the UNet's attention layers for the body."""
        if not hypernets:
            yield
            return
        if self.adapters is None:
            raise UserError("hypernetworks are not available here: this engine has no library")
        from pipeline.lora.hypernetwork import apply_hypernetworks, projection_widths

        unet = model.pipe.unet
        uses = self.adapters.hypernetworks(hypernets, projection_widths(unet))
        with unfused(unet), apply_hypernetworks(unet, uses):  # it hooks to_k and to_v
            yield

    @contextlib.contextmanager
    def _controlnets_placed(
        self, model: LoadedModel, controls: Sequence[ControlUnit]
    ) -> Iterator[tuple[dict[str, Any], tuple[tuple[str, str], ...]]]:
        """The batch's ControlNets by name, on the device for the body (units of weight 0 are
        not loaded), and each unit's (name, A1111 hash) for the parameters."""
        if not controls:
            yield {}, ()
            return
        if self.controlnets is None:
            raise UserError(
                "ControlNet is not available here: this engine has no ControlNet library"
            )
        from pipeline.control.loading import ControlNetCache, placed
        from pipeline.hashes import legacy_model_hash

        if self._controlnet_cache is None:
            self._controlnet_cache = ControlNetCache()
        found, hashes = {}, []
        for unit in controls:
            path, sha256 = self.controlnets.resolve(unit.model)
            if unit.weight > 0 and unit.model not in found:
                found[unit.model] = self._controlnet_cache.load(path, sha256, model.pipe.unet)
            if sha256 not in self._control_hashes:
                self._control_hashes[sha256] = legacy_model_hash(path)
            hashes.append((unit.model, self._control_hashes[sha256]))
        # With CPU offload the pipeline's modules rest on the CPU but run on the card.
        device = getattr(model.pipe, "_execution_device", model.pipe.device)
        with placed(list(found.values()), device):
            yield found, tuple(hashes)

    @contextlib.contextmanager
    def _image_prompts_applied(
        self, model: LoadedModel, request: GenerationRequest
    ) -> Iterator[Callable[[Sequence[ImageTask]], tuple[UnetAddition, ...]]]:
        """Install the IP-Adapter for the body when the batch has weighted image prompts.

        Yields what gives a group of tasks its addition: each task's own pictures, encoded.
        A batch without image prompts (or with weight 0 on all) leaves the UNet untouched.
        """
        from pipeline.image_prompts.files import NOT_CONFIGURED
        from pipeline.image_prompts.plan import plan_slots

        slots = plan_slots(request.image_prompts)
        if request.image_prompts and self.image_prompts is None:
            raise UserError(NOT_CONFIGURED)
        if not slots or self.image_prompts is None:
            yield lambda _: ()
            return
        from pipeline.image_prompts.adapter import (
            ImagePromptAddition,
            apply_adapter,
            check_unet,
            mixed_embeds,
        )

        models, unet = self.image_prompts, model.pipe.unet
        check_unet(models, unet)
        device = getattr(model.pipe, "_execution_device", model.pipe.device)

        def additions(tasks: Sequence[ImageTask]) -> tuple[UnetAddition, ...]:
            pictures = [[Path(p.image) for p in task.request.image_prompts] for task in tasks]
            embeds = mixed_embeds(models, pictures, slots, device, unet.dtype)
            return (ImagePromptAddition(embeds),)

        with apply_adapter(unet, models.weights(device, unet.dtype), slots):
            yield additions

    def _run_group(
        self,
        model: LoadedModel,
        group: _Group,
        passes: Sequence[_Pass],
        progress: _Progress,
        should_stop: Callable[[], bool],
        controlnets: Mapping[str, Any],
    ) -> list[Image.Image]:
        """Every pass for one group of tasks, then the decode, as many images a call as the
        memory model allows; an edit's results go back over its picture."""
        request = group.tasks[0].request
        edits, masked = self._prepare_edits(model, group, passes[0])
        latents = masked.init if masked is not None else self._initial_latents(model, group)
        for index, denoise in enumerate(passes):
            if index > 0 and request.hires is not None:
                assert latents is not None  # the first pass's result
                upscaler = self.upscalers.find(request.hires.upscaler)
                latents = self._upscale_latents(model, latents, denoise, upscaler)
            conditioning = [passes[index] for passes in group.conditioning]
            guide: GuideFactory = Guidance
            if request.tiles is not None:  # a big upscale: blended tiles (pipeline/tiled.py)
                tiled = TiledPass.of(
                    request.tiles, denoise.width, denoise.height, progress.tiles, should_stop
                )
                guide = tiled.guide
            latents = self._denoise(
                model,
                group,
                latents,
                denoise,
                conditioning,
                progress.step,
                should_stop,
                masked,
                controlnets,
                guide,
            )
            progress.finish_pass()
        if should_stop():
            raise BatchInterrupted
        assert latents is not None  # there is always a first pass
        per_call = self.memory.decode_batch(len(latents))
        images = decode_latents(model.pipe.vae, latents, per_call)
        if not edits:
            return images
        return [paste_back(edit, image) for edit, image in zip(edits, images, strict=True)]

    def _prepare_edits(
        self, model: LoadedModel, group: _Group, denoise: _Pass
    ) -> tuple[list[EditPicture], MaskedLatents | None]:
        """Each task's own picture and mask, and their latents; none for a job without a mask."""
        if group.tasks[0].request.mode not in EDIT_MODES:
            return [], None
        size = (denoise.width, denoise.height)
        edits = [prepare_edit(task.request, size) for task in group.tasks]
        encode = functools.partial(encode_pixels, model.pipe.vae)
        return edits, encode_edits(edits, encode, model.source.inpainting)

    def _results(
        self,
        model: LoadedModel,
        group: _Group,
        images: Sequence[Image.Image],
        lora_hashes: tuple[tuple[str, str], ...],
        control_hashes: tuple[tuple[str, str], ...] = (),
    ) -> list[ImageResult]:
        results = []
        for task, image, ti_hashes in zip(group.tasks, images, group.ti_hashes, strict=True):
            identity = ImageIdentity(
                seed=task.seed,
                variation_seed=task.variation_seed,
                model_name=model.name,
                model_hash=model.hash,
                lora_hashes=lora_hashes,
                ti_hashes=ti_hashes,
                control_hashes=control_hashes,
                vae=model.vae,
                image_prompt_model=self._image_prompt_model(task.request),
            )
            results.append(ImageResult(task, image, build_parameters(task.request, identity)))
        return results

    def _image_prompt_model(self, request: GenerationRequest) -> tuple[str, str] | None:
        """The adapter's (name, A1111 short hash) for the infotext of a request that used it."""
        if not request.image_prompts or self.image_prompts is None:
            return None
        return self.image_prompts.name, self.image_prompts.short_hash

    def _checked(self, results: list[ImageResult]) -> list[ImageResult]:
        """The results with the safety checker's verdicts, when there is a checker."""
        if self.safety is None:
            return results
        verdicts = self.safety.flagged([result.image for result in results])
        return [replace(r, flagged=v) for r, v in zip(results, verdicts, strict=True)]

    def _step_count(self, model: LoadedModel, request: GenerationRequest, denoise: _Pass) -> int:
        """UNet calls of one pass: more than its steps for the two-call samplers (Heun, DPM2)."""
        scheduler = make_scheduler(model, request)
        return len(prepare_timesteps(scheduler, request, denoise, model.pipe.device))

    def _encode(
        self,
        model: LoadedModel,
        tasks: Sequence[ImageTask],
        bundled: Mapping[str, torch.Tensor],
        lora_hashes: tuple[tuple[str, str], ...],
    ) -> list[_Group]:
        """Encode every schedule once, then group tasks by their encodings' lengths in each pass.

        Encodings are kept across batches (`EncodingCache`): a rerolled prompt is not encoded
        again unless the model, the LoRAs or the embeddings it meets changed.

        Extra-network tags stay in the stored prompt, so that A1111 reproduces it from the
        infotext; the plan cuts them out before the text is read.
        """
        pipe = model.pipe
        used: dict[str, tuple[str, ...]] = {}
        """The embedding names each text uses."""
        # What else the text encoder's output depends on: which model, and its patched LoRAs.
        loras = tuple((ref.name, ref.te_weight) for ref in tasks[0].request.loras)
        identity = (model.name, model.hash, id(pipe.text_encoder), lora_hashes, loras)

        def encode(schedule: Schedule, clip_skip: int) -> Encodings:
            # A1111 encodes a schedule's texts as one batch, repeats included: see encode_together.
            counts = Counter(text for _, text in schedule)
            pieces = [parse_prompt_attention(text) for text in counts]
            found = [
                self.adapters.embeddings(p, _text_width(model), bundled) if self.adapters else {}
                for p in pieces
            ]
            for text, vectors in zip(counts, found, strict=True):
                used[text] = tuple(name for name in vectors if name not in bundled)
            library = sorted({name for text in counts for name in used[text]})
            embeddings = self.adapters.embedding_hashes(library) if self.adapters else ()

            def encoded() -> dict[str, torch.Tensor]:
                chunks = [
                    split_into_chunks(p, pipe.tokenizer, vectors)[0]
                    for p, vectors in zip(pieces, found, strict=True)
                ]
                every = {name: vector for vectors in found for name, vector in vectors.items()}
                encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
                repeats = list(counts.values())
                encodings = encode_together(chunks, repeats, encoder, tokenizer, clip_skip, every)
                return dict(zip(counts, encodings, strict=True))

            key = (identity, tuple(counts.items()), clip_skip, embeddings)
            by_text = self._encodings.get(key, encoded)
            return tuple((last, by_text[text]) for last, text in schedule)

        groups: dict[tuple[tuple[int, int], ...], _Group] = {}
        for task in tasks:
            plans = plan_conditioning(task.request)
            conditioning = tuple(
                condition_image(plan, functools.partial(encode, clip_skip=task.request.clip_skip))
                for plan in plans
            )
            # Each at its own length, A1111's default: padding the shorter one with empty
            # chunks is its non-default "Pad prompt/negative prompt", a different image.
            key = tuple(image.lengths for image in conditioning)
            group = groups.setdefault(key, _Group([], [], []))
            group.tasks.append(task)
            group.conditioning.append(conditioning)
            texts = [
                text for plan in plans for p in (plan.prompt, plan.negative) for text in p.texts()
            ]
            names = dict.fromkeys(name for text in texts for name in used[text])
            hashes = self.adapters.embedding_hashes(names) if self.adapters else ()
            group.ti_hashes.append(hashes)
        return list(groups.values())

    def _initial_latents(self, model: LoadedModel, group: _Group) -> torch.Tensor | None:
        """None for txt2img; the encoded init image of each task for img2img and upscale."""
        request = group.tasks[0].request
        if request.init_image is None:
            return None

        images = [self._init_image(model, task.request) for task in group.tasks]
        return torch.cat([encode_image(model.pipe.vae, image) for image in images])

    def _init_image(self, model: LoadedModel, request: GenerationRequest) -> Image.Image:
        """The init image at the request's size; an upscale goes through the upscale model first."""
        upscaler = self.upscalers.upscale_model() if request.mode is Mode.UPSCALE else None
        if upscaler is None:
            return load_init_image(request)
        return load_init_image(request, lambda image: self._pixel_upscale(model, image, upscaler))

    def _upscale_latents(
        self, model: LoadedModel, latents: torch.Tensor, target: _Pass, upscaler: Upscaler
    ) -> torch.Tensor:
        """Highres fix's upscale between the passes, in latent space or through pixels."""

        if upscaler.latent_mode is not None:
            size = (target.height // LATENT_FACTOR, target.width // LATENT_FACTOR)
            upscaled = torch.nn.functional.interpolate(
                latents.float(), size=size, mode=upscaler.latent_mode, antialias=upscaler.antialias
            )
            return upscaled.to(latents.dtype)
        vae = model.pipe.vae
        resized = []
        for latent in latents:
            image = decode_latent(vae, latent)
            if upscaler.model_file is not None:
                image = self._pixel_upscale(model, image, upscaler)
            resized.append(image.resize((target.width, target.height), upscaler.resample))
        return torch.cat([encode_image(vae, image) for image in resized])

    def _pixel_upscale(
        self, model: LoadedModel, image: Image.Image, upscaler: Upscaler
    ) -> Image.Image:
        """`image` through an installed ESRGAN-family model, at the model's own scale."""
        from pipeline.pixel_upscalers import PixelModelCache, upscale_image

        assert upscaler.model_file is not None
        if self._pixel_models is None:
            self._pixel_models = PixelModelCache()
        # With CPU offload the pipeline's modules rest on the CPU but run on the card.
        device = getattr(model.pipe, "_execution_device", model.pipe.device)
        net = self._pixel_models.get(upscaler.model_file, device, model.pipe.unet.dtype)
        return upscale_image(net, image)

    def _denoise(
        self,
        model: LoadedModel,
        group: _Group,
        init: torch.Tensor | None,
        denoise: _Pass,
        conditioning: Sequence[ImageConditioning],
        on_step: Callable[[int, torch.Tensor], None],
        should_stop: Callable[[], bool],
        masked: MaskedLatents | None = None,
        controlnets: Mapping[str, Any] | None = None,
        guide: GuideFactory = Guidance,
    ) -> torch.Tensor:
        """One sampling loop with classifier-free guidance; returns the final latents.

        A masked pass keeps the picture's latents where its mask does not repaint; the request's
        ControlNet units (their models in `controlnets`) add their residuals to the UNet calls.
        `guide` builds the noise predictor: `Guidance`, or a tiled pass's blend of tiles.
        """
        from pipeline.control.units import control_additions
        from pipeline.noise import ImageNoise, routed_noise
        from pipeline.schedules import brownian_step_noise

        unet = model.pipe.unet
        request = group.tasks[0].request
        device, dtype = model.pipe.device, unet.dtype
        sampler, _ = resolve_sampler(request.sampler, request.schedule)
        scheduler = make_scheduler(model, request)
        timesteps = prepare_timesteps(scheduler, request, denoise, device)
        # Every pass starts new generators, as A1111 makes a new ImageRNG for the hires pass.
        shape = (4, denoise.height // LATENT_FACTOR, denoise.width // LATENT_FACTOR)
        images = ImageNoise(noise_source(model, request), group.tasks, shape, request.ensd)
        noise = images.initial().to(device, dtype)
        if masked is not None:
            masked = masked.filled(request.inpaint_spec.fill, noise)
            init = masked.init
        if init is None and sampler.timestep_sampler:
            latents = noise * scheduler.init_noise_sigma
        else:
            # k-diffusion starts at x + noise * sigmas[0], x being zero from noise alone;
            # add_noise says the same in the scheduler's own space (VP for DPM++ 2M).
            start = torch.zeros_like(noise) if init is None else init.to(device, dtype)
            first = timesteps[:1].repeat(len(group.tasks))
            latents = scheduler.add_noise(start, noise, first)
        additions = control_additions(
            controlnets or {},
            [task.request for task in group.tasks],
            (denoise.width, denoise.height),
            denoise.run,
            scheduler.order,
            denoise.hires,
            device,
            dtype,
        )
        guidance = guide(conditioning, request.cfg, device, dtype, (*additions, *group.additions))
        denoiser = self._denoiser(model, request)
        with routed_noise(scheduler, images):
            step_noise: Callable[[int], dict[str, torch.Tensor]] | None = None
            if sampler.brownian_step_noise:
                sigmas = schedule_sigmas(scheduler, request, denoise.steps)
                assert sigmas is not None  # the Brownian samplers are k-diffusion's, with sigmas
                seeds = [task.seed for task in group.tasks]
                step_noise = brownian_step_noise(scheduler, sigmas, latents, seeds)
            for index, timestep in enumerate(timesteps, start=1):
                if should_stop():
                    raise BatchInterrupted
                model_input = scheduler.scale_model_input(latents, timestep)
                # A1111 counts denoiser calls, so the prompt schedule moves twice a Heun step.
                extra = masked.unet_extra if masked is not None else None
                guided = guidance.predict(denoiser, model_input, timestep, index - 1, extra)
                if masked is not None:
                    sigma = call_sigma(scheduler, timestep, model_sigmas(scheduler, request))
                    guided = masked.blend(guided, model_input, sigma)
                step_kwargs = step_noise(index - 1) if step_noise is not None else {}
                latents = scheduler.step(guided, timestep, latents, **step_kwargs).prev_sample
                on_step(index, latents)
        return latents


def _text_width(model: LoadedModel) -> int:
    """The text encoder's width, which adapter and embedding files must match."""
    return int(model.pipe.text_encoder.config.hidden_size)


MAX_STRENGTH = 0.999
"""A1111 caps the denoising strength here, so a pass from an image keeps a trace of it."""


def plan_passes(request: GenerationRequest) -> list[_Pass]:
    """The denoising passes of a request, with A1111's step plans (docs/a1111.md).

    txt2img runs its whole schedule. img2img and upscale at strength s run t_enc + 1 steps of
    the request's schedule, t_enc = int(min(s, 0.999) * steps). Highres fix's second pass runs
    exactly its N hires steps (0: the base steps) of a schedule of int(N / denoise) steps.
    """
    steps = request.steps
    width, height = work_size(request)
    if request.init_image is None:
        passes = [_Pass(width, height, steps, steps)]
    else:
        strength = min(request.strength or DEFAULT_STRENGTH, MAX_STRENGTH)
        passes = [_Pass(width, height, steps, int(strength * steps) + 1)]
    if request.hires is not None:
        hires = request.hires
        run = hires.steps or steps
        passes.append(
            _Pass(
                round_to(request.width * hires.scale, LATENT_FACTOR),
                round_to(request.height * hires.scale, LATENT_FACTOR),
                int(run / min(hires.denoise, MAX_STRENGTH)),
                run,
                hires=True,
            )
        )
    return passes


def prepare_timesteps(
    scheduler: Any, request: GenerationRequest, denoise: _Pass, device: torch.device
) -> Any:
    """Set the pass's schedule on the scheduler; returns the timesteps to call the UNet at.

    k-diffusion samplers get A1111's sigmas from the start index of the pass on. The timestep
    samplers (DDIM, PLMS, UniPC) keep diffusers' timesteps and skip the first ones.
    """
    from pipeline.schedules import install_sigmas

    sigmas = schedule_sigmas(scheduler, request, denoise.steps)
    if sigmas is None:
        scheduler.set_timesteps(denoise.steps, device=device)
        skip = (denoise.steps - denoise.run) * scheduler.order
        if skip and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skip)
        return scheduler.timesteps[skip:]
    model = model_sigmas(scheduler, request)
    install_sigmas(scheduler, model, sigmas[denoise.steps - denoise.run :], device)
    return scheduler.timesteps


def schedule_sigmas(scheduler: Any, request: GenerationRequest, steps: int) -> torch.Tensor | None:
    """A1111's whole schedule of `steps` steps for the request's sampler (a pass may run only
    its end); None for the timestep samplers, which have none."""
    from pipeline.schedules import a1111_sigmas

    sampler, chosen = resolve_sampler(request.sampler, request.schedule)
    schedule = effective_schedule(sampler, chosen)
    if schedule is None:
        return None
    return a1111_sigmas(model_sigmas(scheduler, request), sampler, schedule, steps)


def model_sigmas(scheduler: Any, request: GenerationRequest) -> DiscreteSigmas:
    """The model's sigmas as the request's sampler sees them: all 1000 of SD1.5's, or for a
    distilled model's sampler (LCM) only the timesteps it was distilled on."""
    from pipeline.schedules import DiscreteSigmas

    sampler, _ = resolve_sampler(request.sampler, request.schedule)
    sigmas = DiscreteSigmas.of(scheduler)
    if sampler.distilled_steps is not None:
        return sigmas.distilled(sampler.distilled_steps)
    return sigmas


def load_init_image(
    request: GenerationRequest,
    enlarge: Callable[[Image.Image], Image.Image] | None = None,
) -> Image.Image:
    """The request's init image at the request's size (Lanczos), as RGB.

    `enlarge` (a pixel upscaler model) first runs on an image smaller than that size.
    """
    from PIL import Image

    from pipeline.png import read_png

    assert request.init_image is not None
    image, _ = read_png(Path(request.init_image))
    if enlarge is not None and (image.width < request.width or image.height < request.height):
        image = enlarge(image)
    if image.size != (request.width, request.height):
        image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
    return image


def encode_image(vae: Any, image: Image.Image) -> torch.Tensor:
    """VAE-encode an image to scaled latents; the distribution's mean keeps it deterministic."""
    import numpy as np

    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1)
    return encode_pixels(vae, pixels.permute(2, 0, 1).unsqueeze(0))


def encode_pixels(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """VAE-encode pixels (n, 3, h, w) in -1..1 to scaled latents, by the distribution's mean."""
    batch = pixels.to(vae.device, vae.dtype)
    return vae.encode(batch).latent_dist.mean * vae.config.scaling_factor


def make_scheduler(model: LoadedModel, request: GenerationRequest) -> Any:
    """A fresh scheduler for the request's sampler, from the model's own scheduler config.

    The model's betas come from that config; for the k-diffusion samplers its spacing and
    sigma options are overridden, since the engine installs A1111's sigmas itself.
    """
    import diffusers

    from pipeline.k_samplers import K_SCHEDULERS
    from pipeline.schedules import k_diffusion_options

    sampler, _ = resolve_sampler(request.sampler, request.schedule)
    scheduler_class = K_SCHEDULERS.get(sampler.scheduler) or getattr(diffusers, sampler.scheduler)
    options = dict(sampler.options)
    if not sampler.timestep_sampler:
        options |= k_diffusion_options(scheduler_class)
    return scheduler_class.from_config(model.pipe.scheduler.config, **options)


def noise_source(model: LoadedModel, request: GenerationRequest) -> NoiseSource:
    """The request's RNG on the device the model runs on (with offload, not where it rests)."""
    from pipeline.noise import NoiseSource

    device = getattr(model.pipe, "_execution_device", model.pipe.device)
    return NoiseSource(find_rng(request.rng), device)


def decode_latent(vae: Any, latent: torch.Tensor) -> Image.Image:
    """Decode one latent to an image (see `decode_latents`)."""
    return decode_latents(vae, latent.unsqueeze(0), 1)[0]


def decode_latents(vae: Any, latents: torch.Tensor, per_call: int) -> list[Image.Image]:
    """Decode latents to images, `per_call` at a time, again in fp32 where half precision
    overflowed.

    The SD1.5 VAE overflows in fp16 on some images: the result is NaN, which would become a black
    image. The check runs once a call, after the step loop, so it costs one host sync a decode.
    """
    images = []
    for start in range(0, len(latents), per_call):
        scaled = latents[start : start + per_call] / vae.config.scaling_factor
        decoded = vae.decode(scaled.to(vae.dtype)).sample
        broken = _broken_rows(decoded)
        if broken and vae.dtype != torch.float32:
            log.warning("VAE decode overflowed in %s; decoding again in fp32", vae.dtype)
            with _upcast(vae):
                decoded[broken] = vae.decode(scaled[broken].float()).sample.to(decoded.dtype)
            broken = _broken_rows(decoded)
        if broken:
            raise UserError("the image came out empty (NaN) even in fp32: try another seed or VAE")
        images += _to_images(decoded)
    return images


def _to_images(decoded: torch.Tensor) -> list[Image.Image]:
    """A1111's bytes: clamp((x + 1) / 2) times 255, truncated (astype(np.uint8)), not rounded."""
    import numpy as np
    from PIL import Image

    clamped = torch.clamp((decoded.float() + 1.0) / 2.0, min=0.0, max=1.0)
    pixels = (255.0 * clamped.permute(0, 2, 3, 1).cpu().numpy()).astype(np.uint8)
    return [Image.fromarray(array, "RGB") for array in pixels]


def _broken_rows(images: torch.Tensor) -> list[int]:
    """Rows with NaN/Inf anywhere, or saturated to pure black, both signs of an fp16 overflow."""
    rows = images.flatten(1)
    broken = ~torch.isfinite(rows).all(dim=1) | (rows <= -1).all(dim=1)
    return [int(row) for row in broken.nonzero().flatten().tolist()]


@contextlib.contextmanager
def _upcast(vae: Any) -> Iterator[None]:
    dtype = vae.dtype
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


TILED_DECODE_PIXELS = 1024 * 1024
"""Above this many pixels the VAE decodes in tiles, so a large decode fits in memory."""


def _tile_large_decodes(model: LoadedModel, final: _Pass, tiles: TileSpec | None) -> None:
    """A large decode in diffusers' default tiles; a tiled pass encodes and decodes in its own."""
    vae = model.pipe.vae
    configure_vae_tiles(vae, tiles)
    if tiles is not None or final.width * final.height > TILED_DECODE_PIXELS:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


def _reset_peak_memory(model: LoadedModel) -> None:
    if model.pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(model: LoadedModel) -> int:
    """Bytes the device held at most since the last reset (0 where it cannot be measured)."""

    if model.pipe.device.type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return 0
