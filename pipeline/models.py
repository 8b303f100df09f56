"""Model sources and loading: the tiny model, diffusers folders, hub ids and single checkpoints.

Which device, precision and memory mode to use is decided here once, from the settings and the
card, and every model is loaded the same way. torch and diffusers are imported only when a model
is really loaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import UserError
from pipeline.hashes import file_sha256
from pipeline.model_configs import config_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GIB = 1024**3

INPAINTING_IN_CHANNELS = 9
"""An inpainting UNet reads noisy latents (4 channels), the mask (1) and the masked image (4)."""
UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD2_CROSS_ATTENTION = (
    "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
)
SD15_TEXT_WIDTH = 768
SDXL_TEXT_ENCODER = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
"""The keys diffusers' `infer_diffusers_model_type` tells inpainting models apart by."""


class ModelKind(StrEnum):
    TINY = "tiny"
    TINY_INPAINTING = "tiny-inpainting"
    RANDOM_SD15 = "sd15-random"
    FOLDER = "diffusers folder"
    HUB = "hub id"
    SINGLE_FILE = "checkpoint file"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, checked before anything heavy is loaded."""

    name: str
    spec: str
    kind: ModelKind
    path: Path | None = None
    configs: Path | None = None
    """Component configs for a checkpoint file; None means the shipped SD1.5 ones."""
    unet_in_channels: int | None = None
    """From the file's header or the folder's UNet config; None where unknown before loading."""

    @property
    def inpainting(self) -> bool:
        return self.unet_in_channels == INPAINTING_IN_CHANNELS

    @property
    def description(self) -> str:
        """What `/model list` and `dreamcord doctor` call it."""
        if self.inpainting:
            return f"SD1.5 inpainting {self.kind} ({INPAINTING_IN_CHANNELS} input channels)"
        return str(self.kind)

    @property
    def txt2img_refusal(self) -> str | None:
        """Why this model cannot make images from a prompt (None: it can, as far as known)."""
        if not self.inpainting:
            return None
        return (
            f"{self.name} is an SD1.5 inpainting checkpoint ({INPAINTING_IN_CHANNELS} input "
            "channels); it serves image edits (a mask or a grown canvas); pick a normal "
            "checkpoint for /imagine"
        )

    def require_txt2img(self) -> None:
        """Refuse an inpainting model for a job without a mask: it draws weaker pictures from a
        prompt alone (its UNet learnt mostly to fill holes), so a normal checkpoint should."""
        if self.txt2img_refusal is not None:
            raise UserError(self.txt2img_refusal)


def resolve_model(spec: str, name: str | None = None) -> ModelSource:
    """Classify a MODEL value, refusing pickles, missing paths and unreadable checkpoints."""
    spec = spec.strip()
    if spec in (ModelKind.TINY, ModelKind.TINY_INPAINTING, ModelKind.RANDOM_SD15):
        channels = INPAINTING_IN_CHANNELS if spec == ModelKind.TINY_INPAINTING else None
        return ModelSource(name or spec, spec, ModelKind(spec), unet_in_channels=channels)
    path = Path(spec).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(
            f"{spec}: {path.suffix} files are Python pickles that can run code when loaded, so "
            "Dreamcord refuses them; download the .safetensors version of this model, or "
            "convert it once on a trusted machine (diffusers' convert scripts)"
        )
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{spec} is a folder without model_index.json: not a diffusers model")
        channels = _folder_unet_in_channels(path)
        return ModelSource(
            name or path.name, spec, ModelKind.FOLDER, path, unet_in_channels=channels
        )
    if path.suffix.lower() == ".safetensors":
        if not path.is_file():
            raise UserError(f"model file {spec} does not exist: check MODEL or MODELS_DIR")
        check_safetensors(path)
        channels = checkpoint_unet_in_channels(path)
        configs = config_dir("sd15-inpainting") if channels == INPAINTING_IN_CHANNELS else None
        return ModelSource(name or path.stem, spec, ModelKind.SINGLE_FILE, path, configs, channels)
    if _HUB_ID.match(spec) and not path.exists():
        return ModelSource(name or spec.rsplit("/", 1)[-1], spec, ModelKind.HUB)
    raise UserError(
        f"model {spec!r} was not found: use a diffusers folder, a .safetensors checkpoint, "
        "a hub id like stable-diffusion-v1-5/stable-diffusion-v1-5, or tiny"
    )


def check_safetensors(path: Path) -> None:
    """Refuse a file whose safetensors header cannot be read (corrupt, truncated, not one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise UserError(f"{path} holds no tensors: download it again")
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"{path} is not a readable .safetensors file ({error}): it may be truncated or "
            "corrupt, so download it again"
        ) from None


def checkpoint_unet_in_channels(path: Path) -> int | None:
    """The UNet's input channels of an SD1.5 LDM checkpoint, from its header alone.

    Follows diffusers' `infer_diffusers_model_type`: a 9-channel `conv_in` is inpainting, but
    SD2 (1024-wide cross-attention) and SDXL files are not SD1.5 ones, so they get None and meet
    the loader's own refusal. The header holds the shapes, so no tensor is read.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        if UNET_CONV_IN not in keys or SDXL_TEXT_ENCODER in keys:
            return None
        if (
            SD2_CROSS_ATTENTION in keys
            and handle.get_slice(SD2_CROSS_ATTENTION).get_shape()[-1] == 1024
        ):
            return None
        shape = handle.get_slice(UNET_CONV_IN).get_shape()
    return shape[1] if len(shape) == 4 else None


def _folder_unet_in_channels(folder: Path) -> int | None:
    """A diffusers folder's UNet input channels, from `unet/config.json` if it is readable."""
    try:
        config = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("cross_attention_dim") != SD15_TEXT_WIDTH:
        return None  # not an SD1.5 UNet: the loader says what is wrong
    channels = config.get("in_channels")
    return channels if isinstance(channels, int) else None


def short_hash(path: Path) -> str:
    """A1111's model hash: the first 10 hex digits of the file's sha256."""
    return file_sha256(path)[:10]


@dataclass(frozen=True)
class Placement:
    """Where and how models run: device, precision and memory mode."""

    device: str
    dtype: torch.dtype
    memory_mode: str
    attention: str = "sdpa"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def choose_placement(
    device: str = "auto", dtype: str = "auto", memory_mode: str = "auto", attention: str = "sdpa"
) -> Placement:
    """Resolve `auto` settings: cuda > mps > cpu, fp16 on GPUs, a memory mode from the card."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("DEVICE=cuda but no CUDA GPU is visible: set DEVICE=auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UserError("DEVICE=mps but Metal is not available here: set DEVICE=auto or cpu")
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    chosen = dtypes.get(dtype) or (torch.float32 if device == "cpu" else torch.float16)
    if memory_mode == "auto":
        memory_mode = _memory_mode_for(device)
    if attention == "xformers":
        try:
            import xformers  # noqa: F401
        except ImportError:
            raise UserError(
                "ATTENTION=xformers but xformers is not installed: "
                "pip install 'dreamcord[cuda]', or set ATTENTION=sdpa"
            ) from None
    return Placement(device, chosen, memory_mode, attention)


def _memory_mode_for(device: str) -> str:
    """high keeps everything on the card; medium and low offload for 4-6 GB cards."""
    if device != "cuda":
        return "high"
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    if total >= 7 * GIB:
        return "high"
    if total >= 4 * GIB:
        return "medium"
    return "low"


class DiffusionPipeline(Protocol):
    """What Dreamcord uses of diffusers' `StableDiffusionPipeline`, the one place it is typed.

    diffusers registers a pipeline's parts at run time, so a type checker sees none of them;
    its models are `Any` here, so that gap does not spread through the engine.
    """

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    @property
    def device(self) -> torch.device: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def set_progress_bar_config(self, **kwargs: Any) -> None: ...

    def enable_xformers_memory_efficient_attention(self) -> None: ...

    def enable_sequential_cpu_offload(self) -> None: ...

    def enable_attention_slicing(self) -> None: ...

    def enable_model_cpu_offload(self) -> None: ...

    def remove_all_hooks(self) -> None: ...


@dataclass
class LoadedModel:
    """A model ready to run, with what the PNG parameters say about it."""

    source: ModelSource
    pipe: DiffusionPipeline
    hash: str = ""
    vae: tuple[str, str] | None = None
    """(file name, short hash) of a replacement VAE, as A1111 writes `VAE` and `VAE hash`."""

    @property
    def name(self) -> str:
        return self.source.name


def load_model(
    source: ModelSource, placement: Placement, vae: str | None = None, configs: Path | None = None
) -> LoadedModel:
    """Load a model onto its device, with an optional replacement VAE file.

    `configs` (else `source.configs`, else the shipped SD1.5 ones) describes a checkpoint file's
    parts, and the replacement VAE's. Every failure to load becomes a `UserError`.
    """
    from diffusers import StableDiffusionPipeline as _Pipeline

    from pipeline.tokenizer import load_clip_tokenizer

    pipeline_class: Any = _Pipeline  # untyped; what comes out is a DiffusionPipeline

    common: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    configs = configs or source.configs
    model_hash = ""
    try:
        if source.kind in (ModelKind.TINY, ModelKind.TINY_INPAINTING, ModelKind.RANDOM_SD15):
            from pipeline.tiny import build_sd15_random_components, build_tiny_components

            if source.kind is ModelKind.RANDOM_SD15:
                parts = build_sd15_random_components()
            else:
                parts = build_tiny_components(in_channels=source.unet_in_channels or 4)
            pipe: DiffusionPipeline = pipeline_class(**parts, feature_extractor=None, **common)
            if placement.dtype != pipe.unet.dtype:
                pipe.to(dtype=placement.dtype)
        elif source.kind is ModelKind.SINGLE_FILE:
            assert source.path is not None
            if vae:  # loaded first, so a checkpoint without a VAE still loads
                common["vae"] = load_vae(vae, placement.dtype, configs)
            pipe = pipeline_class.from_single_file(
                str(source.path),
                config=str(configs or config_dir()),
                local_files_only=True,
                tokenizer=load_clip_tokenizer(),
                dtype=placement.dtype,
                **common,
            )
            _require_complete(pipe)
            model_hash = short_hash(source.path)
        else:
            pipe = pipeline_class.from_pretrained(source.spec, dtype=placement.dtype, **common)
    except UserError:
        raise
    except Exception as error:
        raise _load_error(source, error) from None
    if vae and "vae" not in common:
        pipe.vae = load_vae(vae, placement.dtype, configs)
    pipe.set_progress_bar_config(disable=True)
    place_pipeline(pipe, placement)
    if placement.device == "cuda":
        from pipeline.speed import tune_pipeline

        # Sequential offload hooks each layer as it is now: a fused layer made after would
        # have no hook to bring it to the card.
        tune_pipeline(pipe, fuse_projections=placement.memory_mode != "low")
    identity = vae_identity(Path(vae).expanduser()) if vae else None
    return LoadedModel(source, pipe, model_hash, identity)


def vae_identity(path: Path) -> tuple[str, str]:
    """A replacement VAE's (name, hash) for the parameters: the file name with its extension
    and A1111's 10-digit hash; a diffusers folder has its name and no hash."""
    return path.name, "" if path.is_dir() else short_hash(path)


def _require_complete(pipe: DiffusionPipeline) -> None:
    """Refuse a checkpoint that lacked some weights: diffusers leaves those parts on `meta`."""
    parts = [
        name
        for name in ("unet", "vae", "text_encoder")
        if any(tensor.is_meta for tensor in getattr(pipe, name).state_dict().values())
    ]
    if parts:
        raise ValueError(f"some {' and '.join(parts)} weights are missing from the file")


def _load_error(source: ModelSource, error: Exception) -> UserError:
    """What went wrong loading `source`, and what to do about it."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    detail = _error_detail(error)
    if source.kind is ModelKind.SINGLE_FILE:
        if isinstance(error, SingleFileComponentError) and "AutoencoderKL" in detail:
            return UserError(
                f"checkpoint {source.spec} has no VAE weights: set VAE to a separate SD1.5 VAE "
                "file (such as vae-ft-mse-840000-ema-pruned.safetensors)"
            )
        return UserError(
            f"could not load checkpoint {source.spec}: {detail}. MODEL must be a complete "
            "Stable Diffusion 1.5 checkpoint (UNet, VAE and text encoder in one .safetensors "
            "file); SDXL and SD2 models, LoRAs and VAE-only files do not work here, and a "
            "partly downloaded file must be downloaded again"
        )
    return UserError(
        f"could not load model {source.spec!r}: {detail}. It must be a Stable Diffusion 1.5 "
        "model in diffusers format, already downloaded or reachable on the Hugging Face Hub"
    )


def _error_detail(error: Exception) -> str:
    """The first line of a loader's error, without diffusers' advice meant for programmers."""
    lines = str(error).strip().splitlines()
    detail = (lines[0] if lines else type(error).__name__).strip().rstrip(".")
    if "meta tensor" in detail:  # what diffusers says when some of a part's weights are absent
        return "some of the model's weights are missing from the file"
    return detail.split(" If you want to instead", 1)[0].rstrip(".")


def load_vae(spec: str, dtype: torch.dtype, configs: Path | None = None) -> Any:
    """A replacement VAE: a .safetensors file (original or diffusers layout) or a folder.

    A file's architecture is `configs/vae` (default: the shipped SD1.5 config).
    """
    from diffusers import AutoencoderKL as _AutoencoderKL

    vae_class: Any = _AutoencoderKL  # untyped, as DiffusionPipeline says
    path = Path(spec).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"VAE {spec}: pickled files are refused; use the .safetensors version")
    if not path.exists():
        raise UserError(f"VAE {spec} does not exist: check the VAE setting")
    try:
        if path.is_dir():
            return vae_class.from_pretrained(path, dtype=dtype)
        check_safetensors(path)
        return vae_class.from_single_file(
            str(path),
            config=str((configs or config_dir()) / "vae"),
            local_files_only=True,
            dtype=dtype,
        )
    except UserError:
        raise
    except Exception as error:
        raise UserError(
            f"could not load VAE {spec!r}: {_error_detail(error)}. VAE must be a Stable "
            "Diffusion 1.5 VAE (a .safetensors file in original or diffusers layout, or a "
            "diffusers folder): download it again, or unset VAE to use the model's own"
        ) from None


def place_pipeline(pipe: DiffusionPipeline, placement: Placement) -> None:
    """Put the model on its device according to the memory mode."""
    if placement.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    if placement.memory_mode == "low" and placement.device == "cuda":
        pipe.enable_sequential_cpu_offload()
        pipe.enable_attention_slicing()
    elif placement.memory_mode == "medium" and placement.device == "cuda":
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(placement.device)


class ModelManager:
    """Loads the model each batch needs; the active one sits on the device.

    Recently used models stay in CPU memory (`keep` of them), so switching back costs a copy to
    the device rather than a load from disk. Called only from the worker thread.
    """

    def __init__(
        self,
        sources: dict[str, ModelSource],
        default: str,
        placement: Placement,
        vae: str | None = None,
        keep: int = 1,
    ) -> None:
        if default not in sources:
            raise UserError(f"default model {default!r} is not among {', '.join(sources)}")
        self.sources = sources
        self.default = default
        self.placement = placement
        self.vae = vae
        self.keep = keep
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()

    def source(self, name: str) -> ModelSource:
        """The source for a request's model name ("default" means the configured default)."""
        key = self.default if name in ("", "default") else name
        if key not in self.sources:
            raise UserError(f"unknown model {name!r}: use one of {', '.join(self.sources)}")
        return self.sources[key]

    def get(self, name: str) -> LoadedModel:
        """The model for `name`, on the device; the previously active one is parked."""
        source = self.source(name)
        active = next(reversed(self._loaded.values()), None)
        if active is not None and active.name == source.name:
            return active
        if active is not None:
            self._park(active)
        model = self._loaded.pop(source.name, None)
        if model is None:
            log.info("loading model %s (%s)", source.name, source.kind)
            model = load_model(source, self.placement, self.vae)
        else:
            place_pipeline(model.pipe, self.placement)
        self._loaded[source.name] = model
        while len(self._loaded) > self.keep + 1:
            self._loaded.popitem(last=False)
        return model

    def _park(self, model: LoadedModel) -> None:
        """Move a model off the device so the next one has the memory."""
        if self.placement.device == "cpu":
            return
        model.pipe.remove_all_hooks()
        model.pipe.to("cpu")
