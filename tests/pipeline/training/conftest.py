"""A training set of 8 generated pictures and the tiny model's parts, for trainer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.tiny import build_tiny_components
from pipeline.training.dataset import Dataset, open_dataset
from pipeline.training.plan import TrainingOptions, TrainingPlan, plan_training
from pipeline.training.trainer import Trainer, TrainingComponents
from tests.pipeline.training.pictures import training_set, write_folder

FAST = {"resolution": 256, "rank": 4, "alpha": 2, "lr": 3e-3, "te_lr": 1e-3}
"""Small and quick on CPU; the tiny random model needs a larger rate to move in 30 steps."""


@pytest.fixture(scope="session")
def eight_pictures(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = write_folder(tmp_path_factory.mktemp("pictures"), training_set(8))
    return open_dataset(root, root / "unused")


def tiny_parts() -> TrainingComponents:
    """The tiny model's parts as a loaded pipeline holds them (fresh each time, same weights)."""
    parts = build_tiny_components()
    return TrainingComponents(
        parts["unet"],
        parts["text_encoder"],
        parts["tokenizer"],
        parts["vae"],
        dict(parts["scheduler"].config),
        "tiny",
    )


def fast_plan(dataset: Dataset, **changes: object) -> TrainingPlan:
    return plan_training(dataset, TrainingOptions.for_preset("fox", **(FAST | changes)))


def start(plan: TrainingPlan, work_dir: Path) -> Trainer:
    return Trainer.start(tiny_parts(), plan, work_dir, "cpu", torch.float32)


@pytest.fixture(scope="module")
def trained(eight_pictures: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """A finished 12-step run, for the export tests."""
    trainer = start(fast_plan(eight_pictures, steps=12), tmp_path_factory.mktemp("run"))
    while not trainer.finished:
        trainer.step()
    return trainer
