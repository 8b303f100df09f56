"""The LoRA trainer: one short, self-contained optimisation step at a time.

It trains on its own copies of the UNet and text encoder (serving never sees the adapters) with
peft's LoRA layers on the attention and feed-forward layers, the epsilon-prediction loss of
diffusers' `train_text_to_image_lora.py`, optional noise offset and min-SNR-gamma weighting. The
VAE only encodes, so every picture is encoded once (kohya's `cache_latents`). All randomness of a
step (noise, timesteps, tag order, caption dropout) is drawn from generators seeded by (seed,
step), and the batch order from (seed, epoch): a resumed run replays exactly what an
uninterrupted one would have done, on any device.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.errors import UserError
from pipeline.training.dataset import split_tags
from pipeline.training.kohya import export_kohya, training_metadata
from pipeline.training.plan import TrainingPlan

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.models import DiffusionPipeline

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
KEEP_CHECKPOINTS = 2
MAX_GRAD_NORM = 1.0
EVAL_BATCH = 4
_CHECKPOINTS = "checkpoints"
_ADAPTERS = "adapters.safetensors"
_STATE = "state.pt"
_PLAN = "plan.json"


@dataclass(frozen=True)
class TrainingComponents:
    """The base model's parts a run starts from; the trainer copies what it trains."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any
    scheduler_config: dict[str, Any]
    model_name: str = ""

    @classmethod
    def from_pipe(cls, pipe: DiffusionPipeline, model_name: str = "") -> TrainingComponents:
        """The parts of the diffusers pipeline the engine serves with."""
        return cls(
            pipe.unet,
            pipe.text_encoder,
            pipe.tokenizer,
            pipe.vae,
            dict(pipe.scheduler.config),
            model_name,
        )


@dataclass(frozen=True)
class StepReport:
    step: int
    total: int
    loss: float
    lr: float
    seconds: float


class Trainer:
    """A run in progress; `start` builds it, `step` advances it, `export` writes the LoRA."""

    def __init__(
        self,
        components: TrainingComponents,
        plan: TrainingPlan,
        work_dir: Path,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        from diffusers import DDPMScheduler

        self.plan = plan
        self.work_dir = work_dir
        self.device = device
        self.dtype = dtype
        self.components = components
        self.step_count = 0
        self.noise_scheduler: Any = DDPMScheduler.from_config(components.scheduler_config)
        self._fingerprint = plan_fingerprint(plan, components.model_name)
        self.unet = _lora_copy(components.unet, UNET_TARGETS, plan, device, dtype)
        self.text_encoder = (
            _lora_copy(components.text_encoder, TEXT_TARGETS, plan, device, dtype)
            if plan.options.te_lr > 0
            else None
        )
        self._cuda = device.type == "cuda"
        if self._cuda:
            self.unet.enable_gradient_checkpointing()
            if self.text_encoder is not None:
                self.text_encoder.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
        self.optimizer = _optimizer(self.unet, self.text_encoder, plan)
        self.lr_scheduler = _lr_scheduler(self.optimizer, plan.total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._cuda and dtype == torch.float16)
        self.latents = self._encode_pictures()
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    @classmethod
    def start(
        cls,
        components: TrainingComponents,
        plan: TrainingPlan,
        work_dir: Path,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> Trainer:
        """A new run, or the run in `work_dir` resumed from its last checkpoint of this plan."""
        work_dir.mkdir(parents=True, exist_ok=True)
        trainer = cls(components, plan, work_dir, torch.device(device), dtype)
        trainer._resume()
        return trainer

    # --- the run ---

    @property
    def finished(self) -> bool:
        return self.step_count >= self.plan.total_steps

    @property
    def epoch(self) -> int:
        """How many epochs are complete."""
        return self.step_count // self.plan.steps_per_epoch

    def step(self) -> StepReport:
        """One optimisation step on the next batch."""
        if self.finished:
            raise RuntimeError("the run is finished")
        started = time.perf_counter()
        options = self.plan.options
        batch = self._batches(self.epoch)[self.step_count % self.plan.steps_per_epoch]
        rng = random.Random(f"{options.seed}:step:{self.step_count}")
        captions = [self._caption(index, rng) for index in batch]
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        latents = torch.stack([self.latents[index] for index in batch])
        noise = torch.randn(latents.shape, generator=generator)
        if options.noise_offset:
            # Crosslabs' noise offset: a per-channel constant, so training sees brightness shifts.
            noise += options.noise_offset * torch.randn(
                (*latents.shape[:2], 1, 1), generator=generator
            )
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (len(batch),), generator=generator)
        self.unet.train()
        if self.text_encoder is not None:
            self.text_encoder.train()
        loss = self._loss(latents, noise.to(self.device), timesteps.to(self.device), captions, True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self._trained_parameters(), MAX_GRAD_NORM)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = _current_lr(self.optimizer)
        self.lr_scheduler.step()
        self.step_count += 1
        if self.step_count % options.checkpoint_every == 0 or self.finished:
            self.checkpoint()
        return StepReport(
            self.step_count,
            self.plan.total_steps,
            float(loss.detach()),
            lr,
            time.perf_counter() - started,
        )

    def eval_loss(self) -> float:
        """The plain loss on a fixed batch with fixed noise and timesteps, comparable over time."""
        first = self.plan.images[0].bucket
        batch = [i for i, p in enumerate(self.plan.images) if p.bucket == first][:EVAL_BATCH]
        latents = torch.stack([self.latents[index] for index in batch])
        generator = torch.Generator().manual_seed(self.plan.options.seed + 1)
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.linspace(steps * 0.1, steps * 0.9, len(batch)).long().to(self.device)
        captions = [self.plan.images[index].caption for index in batch]
        self.unet.eval()
        if self.text_encoder is not None:
            self.text_encoder.eval()
        with torch.no_grad():
            return float(self._loss(latents, noise, timesteps, captions, weighted=False))

    def sample(
        self, prompts: list[str], seeds: list[int], weight: float = 1.0, steps: int = 20
    ) -> list[Image.Image]:
        """Pictures from the adapters as trained so far, at LoRA `weight`, one per prompt."""
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        parts = self.components
        pipeline_class: Any = StableDiffusionPipeline  # untyped, as models.DiffusionPipeline says
        pipe = pipeline_class(
            vae=parts.vae,
            text_encoder=self.text_encoder or parts.text_encoder,
            tokenizer=parts.tokenizer,
            unet=self.unet,
            scheduler=DPMSolverMultistepScheduler.from_config(parts.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        size = self.plan.options.resolution
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        self.unet.eval()
        layers = _lora_layers(self.unet, self.text_encoder)
        try:
            for layer in layers:
                layer.scale_layer(weight)
            with torch.no_grad():
                result = pipe(
                    prompts, height=size, width=size, num_inference_steps=steps,
                    generator=generators, output_type="pil",
                )  # fmt: skip
        finally:
            for layer in layers:
                layer.unscale_layer()
        return list(result.images)

    # --- files ---

    def checkpoint(self) -> Path:
        """Write the run's state as `checkpoints/step-N`, atomically, keeping the last two."""
        from safetensors.torch import save_file

        folder = self.work_dir / _CHECKPOINTS
        final = folder / f"step-{self.step_count:06}"
        temp = folder / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        save_file(self._adapter_state(), str(temp / _ADAPTERS))
        state = {
            "step": self.step_count,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        torch.save(state, temp / _STATE)
        (temp / _PLAN).write_text(json.dumps({"fingerprint": self._fingerprint}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temp, final)
        for old in sorted(folder.glob("step-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _resume(self) -> None:
        """Load the newest checkpoint made for this plan, if there is one."""
        from safetensors.torch import load_file

        for folder in sorted((self.work_dir / _CHECKPOINTS).glob("step-*"), reverse=True):
            try:
                saved = json.loads((folder / _PLAN).read_text())["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if saved != self._fingerprint:
                continue
            adapters = load_file(str(folder / _ADAPTERS), device=str(self.device))
            with torch.no_grad():
                for name, parameter in self._named_trained_parameters():
                    parameter.copy_(adapters[name])
            # Our own file, written by `checkpoint`; weights_only refuses anything but tensors.
            state = torch.load(folder / _STATE, map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step_count = int(state["step"])
            return

    def export(self, path: Path) -> Path:
        """Write the LoRA as sd-scripts would (kohya names, `ss_*` metadata)."""
        metadata = training_metadata(self.plan, self.components.model_name, self.step_count)
        return export_kohya(self.unet, self.text_encoder, path, metadata)

    @property
    def reserved_bytes(self) -> int:
        """Device memory the run holds between steps: copies, adapters, optimizer state, latents."""
        tensors: list[torch.Tensor] = [*self.unet.parameters(), *self.unet.buffers()]
        if self.text_encoder is not None:
            tensors += [*self.text_encoder.parameters(), *self.text_encoder.buffers()]
        tensors += list(self.latents)
        for state in self.optimizer.state.values():
            tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]
        on_device = (t for t in tensors if t.device.type == self.device.type)
        return sum(t.numel() * t.element_size() for t in on_device)

    def close(self) -> None:
        """Free the copies and the optimizer state."""
        del self.unet, self.text_encoder, self.optimizer, self.latents
        if self._cuda:
            torch.cuda.empty_cache()

    # --- parts of a step ---

    def _loss(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        captions: list[str],
        weighted: bool,
    ) -> torch.Tensor:
        """diffusers' LoRA loss: MSE against the noise (or velocity), min-SNR weighted."""
        from diffusers.training_utils import compute_snr

        ids = self.components.tokenizer(
            captions,
            padding="max_length",
            max_length=self.components.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self._cuda):
            if self.text_encoder is not None:
                hidden = self.text_encoder(ids)[0]
            else:  # the served encoder, frozen: no gradient may reach its weights
                with torch.no_grad():
                    hidden = self.components.text_encoder(ids)[0]
            prediction = self.unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        errors = (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
        gamma = self.plan.options.min_snr_gamma
        if weighted and gamma:
            snr = compute_snr(self.noise_scheduler, timesteps)
            weights = torch.clamp(snr, max=gamma) / snr
            if self.noise_scheduler.config.prediction_type == "v_prediction":
                weights = torch.clamp(snr, max=gamma) / (snr + 1)
            errors = errors * weights
        return errors.mean()

    def _caption(self, index: int, rng: random.Random) -> str:
        """The caption of one picture for one step: tags shuffled after `keep_tokens`, or
        dropped entirely at the caption-dropout rate (then the model learns the unconditioned
        picture, as kohya's `caption_dropout_rate`)."""
        options = self.plan.options
        if rng.random() < options.caption_dropout:
            return ""
        tags = split_tags(self.plan.images[index].caption)
        if options.shuffle_tags:
            kept, rest = tags[: options.keep_tokens], tags[options.keep_tokens :]
            rng.shuffle(rest)
            tags = kept + rest
        return ", ".join(tags)

    def _batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches: each bucket's repeated pictures shuffled and cut, then the
        batches shuffled, as sd-scripts' bucket manager does."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = random.Random(f"{self.plan.options.seed}:epoch:{epoch}")
        by_bucket: dict[tuple[int, int], list[int]] = {}
        for index, planned in enumerate(self.plan.images):
            by_bucket.setdefault(planned.bucket, []).extend([index] * planned.repeats)
        size = self.plan.options.batch
        batches = []
        for bucket in sorted(by_bucket):
            items = by_bucket[bucket]
            rng.shuffle(items)
            batches += [items[i : i + size] for i in range(0, len(items), size)]
        rng.shuffle(batches)
        self._epoch_cache = (epoch, batches)
        return batches

    def _encode_pictures(self) -> list[torch.Tensor]:
        """Every picture cropped to its bucket and encoded once by the frozen VAE."""
        vae = self.components.vae
        generator = torch.Generator().manual_seed(self.plan.options.seed)
        latents = []
        with torch.no_grad():
            for planned in self.plan.images:
                pixels = _bucket_pixels(planned.image.path, planned.bucket)
                pixels = pixels.to(self.device, vae.dtype)
                encoded = vae.encode(pixels[None]).latent_dist
                noise = torch.randn(encoded.mean.shape, generator=generator)
                sample = encoded.mean + encoded.std * noise.to(self.device, encoded.mean.dtype)
                latents.append((sample[0] * vae.config.scaling_factor).float())
        return latents

    def _named_trained_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        named = [(f"unet.{n}", p) for n, p in self.unet.named_parameters() if p.requires_grad]
        if self.text_encoder is not None:
            named += [
                (f"te.{n}", p) for n, p in self.text_encoder.named_parameters() if p.requires_grad
            ]
        return named

    def _trained_parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for _, parameter in self._named_trained_parameters()]

    def _adapter_state(self) -> dict[str, torch.Tensor]:
        return {
            name: parameter.detach().contiguous()
            for name, parameter in self._named_trained_parameters()
        }


def plan_fingerprint(plan: TrainingPlan, model_name: str) -> str:
    """What a checkpoint must have been made for to be resumed: the model, the options (but how
    often to checkpoint), and each picture's bytes, caption, bucket and repeats."""
    options = plan.options.to_json()
    options.pop("checkpoint_every")
    digest = hashlib.sha256(json.dumps([model_name, options, plan.total_steps]).encode())
    for planned in plan.images:
        digest.update(hashlib.sha256(planned.image.path.read_bytes()).digest())
        digest.update(json.dumps([planned.caption, planned.bucket, planned.repeats]).encode())
    return digest.hexdigest()


def _lora_copy(
    model: Any, targets: tuple[str, ...], plan: TrainingPlan, device: torch.device, dtype: Any
) -> Any:
    """A copy of `model` on `device` with LoRA layers on `targets`, the only trained weights.

    The frozen weights stay in the run's dtype; the LoRA weights are fp32, as diffusers'
    `cast_training_params` keeps them for mixed precision.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig, inject_adapter_in_model

    options = plan.options
    twin = copy.deepcopy(model).to(device).requires_grad_(False)
    if twin.dtype != dtype:
        twin = twin.to(dtype)
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,  # type: ignore[arg-type]  # typed int, used as a number
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        twin = inject_adapter_in_model(config, twin)
    cast_training_params(twin, dtype=torch.float32)
    return twin


def _lora_layers(*models: Any) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [
        module
        for model in models
        if model is not None
        for module in model.modules()
        if isinstance(module, LoraLayer)
    ]


def _optimizer(unet: Any, text_encoder: Any, plan: TrainingPlan) -> torch.optim.Optimizer:
    options = plan.options
    groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": options.lr}]
    if text_encoder is not None:
        groups.append(
            {
                "params": [p for p in text_encoder.parameters() if p.requires_grad],
                "lr": options.te_lr,
            }
        )
    if options.optimizer == "prodigy":
        from prodigyopt import Prodigy

        # The settings Prodigy's authors give for diffusion LoRAs.
        optimizer: torch.optim.Optimizer = Prodigy(
            groups, weight_decay=0.01, use_bias_correction=True, safeguard_warmup=True
        )
        return optimizer
    return torch.optim.AdamW(groups, weight_decay=1e-2)


def _lr_scheduler(optimizer: torch.optim.Optimizer, total: int) -> Any:
    """A short linear warm-up, then cosine decay to zero, as the guides recommend."""
    from diffusers.optimization import get_scheduler

    warmup = min(100, math.ceil(total * 0.05))
    return get_scheduler(
        "cosine", optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1)
    )


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The UNet group's rate this step (Prodigy's is its lr times its estimated step size d)."""
    group = optimizer.param_groups[0]
    return float(group["lr"]) * float(group.get("d", 1.0))


def _bucket_pixels(path: Path, bucket: tuple[int, int]) -> torch.Tensor:
    """The picture scaled to cover the bucket and centre-cropped to it, in [-1, 1], CHW."""
    import numpy as np
    from PIL import Image, ImageOps

    width, height = bucket
    try:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except OSError as error:
        raise UserError(f"{path.name} cannot be read any more ({error})") from None
    scale = max(width / picture.width, height / picture.height)
    size = (max(width, round(picture.width * scale)), max(height, round(picture.height * scale)))
    picture = picture.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    picture = picture.crop((left, top, left + width, top + height))
    array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)
