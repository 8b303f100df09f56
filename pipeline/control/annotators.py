"""Annotator models on disk (DATA_DIR/annotators): the preprocessors that need weights.

Only `depth` has one: a transformers depth-estimation folder in `annotators/depth` (DPT/MiDaS
such as Intel/dpt-hybrid-midas, or Depth Anything such as LiheYoung/depth-anything-small-hf),
read offline from `.safetensors` weights only. Its map follows A1111's depth_midas: the
relative inverse depth scaled to 0..255, so near is white. The model is small, so it runs on
the CPU in the thread that makes the map (never the GPU worker's), loaded once and kept: one
model at a time, reloaded when its weights file changes. Pose and lineart have no transformers
model: those maps are sent ready (`none`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

ANNOTATORS_FOLDER = "annotators"
"""Under DATA_DIR: one folder per annotator model."""
DEPTH_FOLDER = "depth"
DEPTH_EXAMPLES = "Intel/dpt-hybrid-midas or LiheYoung/depth-anything-small-hf"
INVERSE_DEPTH_TYPES = ("dpt", "depth_anything")
"""transformers model types whose output is relative inverse depth (MiDaS's convention);
metric-depth models (ZoeDepth, GLPN, Depth Pro) are far-is-bright and refused."""


class Annotators:
    """The annotator models under `folder`, loaded when first used (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._loaded: tuple[tuple[str, int, int], Any, Any] | None = None

    def check_depth(self) -> Path:
        """The depth model's safetensors weights, or a UserError saying what to put where."""
        folder = self.folder / DEPTH_FOLDER
        ready = "or send a ready depth map with preprocess none"
        if not (folder / "config.json").is_file():
            raise UserError(
                f"the depth preprocessor needs a depth model in {folder} (a transformers "
                f"depth-estimation folder, e.g. {DEPTH_EXAMPLES}): put it there, {ready}"
            )
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise UserError(
                f"the depth model in {folder} has no .safetensors weights: only safetensors are "
                f"loaded (.bin/.pt files are pickles that can run code); {ready}"
            )
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as error:
            raise UserError(f"the depth model's config.json cannot be read ({error})") from None
        if model_type not in INVERSE_DEPTH_TYPES:
            raise UserError(
                f"the depth model in {folder} is a {model_type!r} model: use a DPT/MiDaS or "
                f"Depth Anything folder (e.g. {DEPTH_EXAMPLES}), whose maps are near-is-white"
            )
        return weights[0]

    def depth(self, picture: Image.Image) -> Image.Image:
        """The depth map of `picture` at its size, A1111's depth_midas way (blocking, CPU)."""
        import numpy as np
        import torch
        from PIL import Image

        with self._lock:
            model, processor = self._depth_model()
            inputs = processor(images=picture.convert("RGB"), return_tensors="pt")
            with torch.inference_mode():
                outputs = model(**inputs)
            sizes = [(picture.height, picture.width)]
            depth = processor.post_process_depth_estimation(outputs, target_sizes=sizes)
        values = depth[0]["predicted_depth"].float().numpy()
        values = values - values.min()
        top = values.max()
        scaled = values / top if top > 0 else values  # a flat map is all far: black
        grey = (scaled * 255.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")

    def _depth_model(self) -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        weights = self.check_depth()
        stat = weights.stat()
        key = (str(weights), stat.st_mtime_ns, stat.st_size)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # one model at a time: let the old one go first
            folder = weights.parent
            try:
                model: Any = AutoModelForDepthEstimation.from_pretrained(
                    folder, local_files_only=True, use_safetensors=True
                )
                processor_class: Any = AutoImageProcessor  # untyped in transformers
                processor = processor_class.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as error:
                detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise UserError(
                    f"the depth model in {folder} cannot be loaded ({detail}): it needs its "
                    "config.json, preprocessor_config.json and .safetensors weights"
                ) from None
            self._loaded = (key, model.to("cpu").float().eval(), processor)
        return self._loaded[1], self._loaded[2]
