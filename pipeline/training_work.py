"""A training run as the worker's background work: a step, the epoch's samples, the export.

Each `step()` is one short piece on the model thread: one optimisation step; after an epoch,
the samples at fixed seeds (with and without the trigger word) as a piece of their own; after
the last step, the kohya export. So an image job waits at most one of these pieces. The trainer
itself (pipeline.training.trainer) is imported only when a run really starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.training.dataset import split_tags

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.engine import Engine
    from pipeline.training.plan import TrainingPlan
    from pipeline.training.trainer import Trainer

SAMPLE_SEEDS = (1_234, 5_678)
"""Fixed, so the samples of each epoch differ only by what training changed."""
SAMPLE_STEPS = 20


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    total: int
    loss: float
    seconds: float


@dataclass(frozen=True)
class TrainingSamples:
    """One epoch's samples: each prompt at each seed, in prompt order (trigger first)."""

    epoch: int
    prompts: tuple[str, ...]
    images: tuple[Image.Image, ...]


@dataclass(frozen=True)
class TrainingExported:
    path: Path


TrainingEvent = TrainingProgress | TrainingSamples | TrainingExported


def sample_prompts(caption: str, trigger: str) -> tuple[str, str]:
    """A training caption with the trigger word first, and the same caption without it."""
    tags = [tag for tag in split_tags(caption) if tag != trigger]
    rest = ", ".join(tags) or "a picture"
    return f"{trigger}, {rest}", rest


class TrainingWork:
    """A `pipeline.background.BackgroundWork` over one `Trainer`; `finished` once exported."""

    def __init__(self, trainer: Trainer, export_to: Path, sample_steps: int = SAMPLE_STEPS) -> None:
        self.trainer = trainer
        self.export_to = export_to
        self.sample_steps = sample_steps
        self._sampled_epochs = trainer.epoch
        """A resumed run does not sample again the epochs it already showed."""
        self._sampled_last = False
        self._exported: Path | None = None

    @property
    def finished(self) -> bool:
        return self._exported is not None

    @property
    def reserved_bytes(self) -> int:
        return 0 if self.finished else self.trainer.reserved_bytes

    def step(self) -> TrainingEvent:
        trainer = self.trainer
        # Samples after each epoch, and after the last step when it ends an epoch part-way.
        if trainer.epoch > self._sampled_epochs or (trainer.finished and not self._sampled_last):
            self._sampled_epochs = trainer.epoch
            self._sampled_last = trainer.finished
            return self._samples(max(1, trainer.epoch))
        if trainer.finished:
            self._exported = trainer.export(self.export_to)
            return TrainingExported(self._exported)
        report = trainer.step()
        return TrainingProgress(report.step, report.total, report.loss, report.seconds)

    def close(self) -> None:
        self.trainer.close()

    def _samples(self, epoch: int) -> TrainingSamples:
        plan = self.trainer.plan
        prompts = sample_prompts(plan.images[0].caption, plan.options.trigger)
        asked = [prompt for prompt in prompts for _ in SAMPLE_SEEDS]
        seeds = [seed for _ in prompts for seed in SAMPLE_SEEDS]
        images = self.trainer.sample(asked, seeds, 1.0, steps=self.sample_steps)
        return TrainingSamples(epoch, prompts, tuple(images))


def start_training(
    engine: Engine, plan: TrainingPlan, work_dir: Path, export_to: Path, sample_steps: int
) -> TrainingWork:
    """On the model thread: a run on the engine's default model, resumed from `work_dir`'s last
    checkpoint when it has one."""
    from pipeline.training.trainer import Trainer, TrainingComponents

    model = engine.models.get(engine.default_model)
    components = TrainingComponents.from_pipe(model.pipe, model.name)
    placement = engine.models.placement
    trainer = Trainer.start(components, plan, work_dir, placement.device, placement.dtype)
    return TrainingWork(trainer, export_to, sample_steps)
