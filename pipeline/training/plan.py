"""What a training run will do, decided before it starts: options, repeats, epochs, buckets, steps.

The figures follow kohya's sd-scripts, which the community guides are written for: total steps =
images x repeats x epochs / batch size, a kohya `10_name` folder sets its pictures' repeats, and
pictures are grouped into aspect-ratio buckets (sides multiples of 64, area at most the
resolution squared), each batch drawn from one bucket. Pure Python, so the bot can show the plan
and refuse a bad one before a model is touched.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from pipeline.errors import UserError
from pipeline.training.dataset import Dataset, TrainingImage, split_tags

Optimizer = Literal["adamw", "prodigy"]
OPTIMIZERS: tuple[Optimizer, ...] = ("adamw", "prodigy")
BUCKET_STEP = 64
MIN_BUCKET, MAX_BUCKET = 256, 1024
"""sd-scripts' default `min_bucket_reso` and `max_bucket_reso`."""
MAX_STEPS = 50_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")


@dataclass(frozen=True)
class Preset:
    """The guides' starting point for one kind of LoRA."""

    repeats: int
    """Steps per picture per epoch, when the picture's folder gives none."""
    epochs: int
    rank: int
    alpha: float
    lr: float = 1e-4
    te_lr: float = 5e-5
    min_steps: int = 1_500
    max_steps: int = 6_000
    """The automatic total is clamped to this range; `steps` overrides it."""


PRESETS: Mapping[str, Preset] = {
    # 10-16 steps per picture for (anime) characters, 17-35 for realistic subjects and styles,
    # 50+ for scenes and concepts; 1,500-6,000 steps in all.
    "character": Preset(repeats=12, epochs=10, rank=32, alpha=16),
    "style": Preset(repeats=25, epochs=10, rank=64, alpha=32),
    "concept": Preset(repeats=50, epochs=8, rank=32, alpha=16),
}


@dataclass(frozen=True)
class TrainingOptions:
    """Everything a user chooses about a run; `for_preset` fills what they left out."""

    name: str
    trigger: str
    preset: str = "character"
    steps: int | None = None
    """None: from the preset, the pictures and their repeats."""
    rank: int = 32
    alpha: float = 16
    lr: float = 1e-4
    te_lr: float = 5e-5
    batch: int = 1
    resolution: int = 512
    optimizer: Optimizer = "adamw"
    noise_offset: float = 0.0
    min_snr_gamma: float = 5.0
    """0 turns min-SNR weighting off; 5 is the value Hang et al. recommend."""
    shuffle_tags: bool = True
    keep_tokens: int = 1
    """How many leading tags stay in place when tags are shuffled (the trigger word)."""
    caption_dropout: float = 0.05
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def for_preset(cls, name: str, preset: str = "character", **chosen: Any) -> TrainingOptions:
        """Options from a preset, with the user's non-None choices on top.

        The trigger word defaults to the name; alpha keeps the preset's ratio to rank. Prodigy
        finds its own step size, so its learning rates default to 1 (its authors' value).
        """
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        base = PRESETS[preset]
        given = {key: value for key, value in chosen.items() if value is not None}
        rank = given.get("rank", base.rank)
        defaults: dict[str, Any] = {
            "rank": rank,
            "alpha": base.alpha / base.rank * rank,  # the preset's alpha / rank ratio
            "lr": base.lr,
            "te_lr": base.te_lr,
        }
        if given.get("optimizer") == "prodigy":
            defaults |= {"lr": 1.0, "te_lr": 1.0}
        trigger = given.pop("trigger", None) or name
        return cls(name=name, trigger=trigger, preset=preset, **(defaults | given))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingOptions:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown training options {', '.join(unknown)}")
        return cls(**data)


def _check(options: TrainingOptions) -> None:
    """Refuse options no run could use, naming the option and its range."""
    problems = []
    if not _NAME.match(options.name):
        problems.append("the name must be 1-60 letters, digits, '_', '-' or '.'")
    if not options.trigger.strip() or "," in options.trigger:
        problems.append("the trigger word must be some text without commas")
    if options.preset not in PRESETS:
        problems.append(f"the preset must be one of {', '.join(PRESETS)}")
    if options.steps is not None and not 1 <= options.steps <= MAX_STEPS:
        problems.append(f"steps must be 1-{MAX_STEPS:,}")
    if not 1 <= options.rank <= 256:
        problems.append("rank must be 1-256 (the guides use 8-128)")
    if not 0 < options.alpha <= 4 * options.rank:
        problems.append("alpha must be above 0 and at most 4 x rank (usually rank / 2)")
    for label, value in (("lr", options.lr), ("te_lr", options.te_lr)):
        if not 0 <= value <= 10:
            problems.append(f"{label} must be 0-10 (AdamW uses about 1e-4, Prodigy 1)")
    if not 1 <= options.batch <= 16:
        problems.append("batch must be 1-16")
    if options.resolution % BUCKET_STEP or not 256 <= options.resolution <= 1024:
        problems.append("resolution must be a multiple of 64 from 256 to 1024 (SD1.5: 512)")
    if options.optimizer not in OPTIMIZERS:
        problems.append(f"the optimizer must be one of {', '.join(OPTIMIZERS)}")
    if not 0 <= options.noise_offset <= 1:
        problems.append("noise offset must be 0-1 (the guides use 0.0357-0.1)")
    if not 0 <= options.min_snr_gamma <= 20:
        problems.append("min-SNR gamma must be 0 (off) to 20 (the paper uses 5)")
    if not 0 <= options.caption_dropout < 1:
        problems.append("caption dropout must be at least 0 and under 1")
    if options.keep_tokens < 0:
        problems.append("keep_tokens must be 0 or more")
    if options.checkpoint_every < 1:
        problems.append("checkpoint_every must be 1 or more steps")
    if problems:
        raise UserError("; ".join(problems))


@dataclass(frozen=True)
class PlannedImage:
    """One picture as training sees it: its caption with the trigger, bucket and repeats."""

    image: TrainingImage
    caption: str
    bucket: tuple[int, int]
    repeats: int


@dataclass(frozen=True)
class TrainingPlan:
    options: TrainingOptions
    images: tuple[PlannedImage, ...]
    epochs: int
    steps_per_epoch: int
    total_steps: int

    @property
    def buckets(self) -> dict[tuple[int, int], int]:
        """Bucket (width, height) -> how many pictures it holds."""
        return dict(Counter(planned.bucket for planned in self.images))

    @property
    def repeats(self) -> dict[str, int]:
        """kohya folder name -> repeats of its pictures."""
        return {_kohya_folder(planned): planned.repeats for planned in self.images}

    @property
    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """sd-scripts' `ss_dataset_dirs`: folder -> repeats and picture count."""
        counts = Counter(_kohya_folder(planned) for planned in self.images)
        return {
            folder: {"n_repeats": self.repeats[folder], "img_count": count}
            for folder, count in counts.items()
        }

    @property
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """sd-scripts' `ss_tag_frequency`: folder -> tag -> count, of the captions trained on."""
        counts: dict[str, Counter[str]] = {}
        for planned in self.images:
            counts.setdefault(_kohya_folder(planned), Counter()).update(split_tags(planned.caption))
        return {folder: dict(counter) for folder, counter in counts.items()}

    def estimated_seconds(self, steps_per_second: float) -> float:
        return self.total_steps / steps_per_second

    def describe(self, steps_per_second: float | None = None) -> str:
        """What will happen, in the words the guides use."""
        options = self.options
        repeats = ", ".join(f"{folder} x{count}" for folder, count in self.repeats.items())
        buckets = ", ".join(f"{w}x{h} ({count})" for (w, h), count in sorted(self.buckets.items()))
        lines = [
            f"LoRA {options.name!r} (trigger {options.trigger!r}, preset {options.preset})",
            f"{len(self.images)} pictures, repeats {repeats}, batch {options.batch}",
            f"{self.epochs} epoch(s) of {self.steps_per_epoch} step(s): "
            f"{self.total_steps} steps in all",
            f"buckets at {options.resolution}: {buckets}",
            f"rank {options.rank}, alpha {options.alpha:g}, {options.optimizer} "
            f"(UNet lr {options.lr:g}, text encoder lr {options.te_lr:g})",
        ]
        if steps_per_second:
            lines.append(f"about {_duration(self.estimated_seconds(steps_per_second))}")
        return "\n".join(lines)


def _kohya_folder(planned: PlannedImage) -> str:
    """The folder name sd-scripts would have read these repeats from (`12_fox`)."""
    if planned.image.repeats is not None:
        return planned.image.folder
    return f"{planned.repeats}_{planned.image.folder}"


def plan_training(dataset: Dataset, options: TrainingOptions) -> TrainingPlan:
    """Repeats, buckets, epochs and the total steps for `dataset` trained with `options`."""
    preset = PRESETS[options.preset]
    sizes = bucket_sizes(options.resolution)
    images = tuple(
        PlannedImage(
            image,
            caption_with_trigger(image.caption, options.trigger),
            nearest_bucket(image.width, image.height, sizes),
            image.repeats or preset.repeats,
        )
        for image in dataset.images
    )
    steps_per_epoch = _steps_per_epoch(images, options.batch)
    if options.steps is not None:
        total = options.steps
    else:
        wanted = steps_per_epoch * preset.epochs
        total = min(max(wanted, preset.min_steps), preset.max_steps)
    epochs = max(1, math.ceil(total / steps_per_epoch))
    return TrainingPlan(options, images, epochs, steps_per_epoch, total)


def _steps_per_epoch(images: tuple[PlannedImage, ...], batch: int) -> int:
    """Each bucket is cut into batches of its own, so a last short batch counts as a step."""
    per_bucket = Counter[tuple[int, int]]()
    for planned in images:
        per_bucket[planned.bucket] += planned.repeats
    return sum(math.ceil(count / batch) for count in per_bucket.values())


def caption_with_trigger(caption: str, trigger: str) -> str:
    """The caption trained on: the trigger word first (so keep_tokens=1 keeps it in place)."""
    return ", ".join([trigger, *(tag for tag in split_tags(caption) if tag != trigger)])


def bucket_sizes(
    resolution: int, min_side: int = MIN_BUCKET, max_side: int = MAX_BUCKET
) -> tuple[tuple[int, int], ...]:
    """kohya's buckets: the square, and every width from `min_side` to `max_side` in steps of 64
    with the largest height of the same step whose area stays within the resolution squared."""
    area = resolution * resolution
    sizes = {(resolution // BUCKET_STEP * BUCKET_STEP,) * 2}
    for width in range(min_side, max_side + 1, BUCKET_STEP):
        height = min(max_side, area // width // BUCKET_STEP * BUCKET_STEP)
        if height >= min_side:
            sizes.update({(width, height), (height, width)})
    return tuple(sorted(sizes))


def nearest_bucket(width: int, height: int, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The bucket whose width / height is closest to the picture's (kohya's rule; on a tie the
    first in sorted order)."""
    ratio = width / height
    return min(sizes, key=lambda size: abs(size[0] / size[1] - ratio))


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02} min"
