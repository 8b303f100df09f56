"""The trainer on the tiny model on CPU: it learns, resumes exactly, samples, leaves serving be."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.training.dataset import Dataset
from pipeline.training.trainer import Trainer
from tests.pipeline.training.conftest import fast_plan, start, tiny_parts


def _run(trainer: Trainer, steps: int) -> list[float]:
    return [trainer.step().loss for _ in range(steps)]


@pytest.mark.slow
def test_thirty_steps_lower_the_loss_on_the_fixed_batch(eight_pictures: Dataset, tmp_path) -> None:
    trainer = start(fast_plan(eight_pictures, steps=30), tmp_path)
    before = trainer.eval_loss()
    assert trainer.eval_loss() == before  # fixed noise and timesteps: the same figure twice
    reports = [trainer.step() for _ in range(30)]
    assert trainer.finished and trainer.epoch == 1  # 16 steps per epoch (8 pictures x 2)
    assert [r.step for r in reports] == list(range(1, 31)) and reports[-1].total == 30
    assert all(r.seconds > 0 and np.isfinite(r.loss) for r in reports)
    after = trainer.eval_loss()
    assert after < before - 0.01, (before, after)


def test_resuming_a_checkpoint_gives_the_uninterrupted_next_loss(
    eight_pictures: Dataset, tmp_path: Path
) -> None:
    plan = fast_plan(eight_pictures, steps=10, checkpoint_every=4)
    straight = start(plan, tmp_path / "straight")
    expected = _run(straight, 7)

    interrupted = start(plan, tmp_path / "again")
    assert _run(interrupted, 5) == expected[:5]  # step 4 wrote a checkpoint
    del interrupted  # as if the process died after step 5: its step is lost
    resumed = start(plan, tmp_path / "again")
    assert resumed.step_count == 4
    assert _run(resumed, 3) == pytest.approx(expected[4:7], rel=1e-6, abs=1e-7)


def test_a_checkpoint_of_another_plan_is_not_resumed(
    eight_pictures: Dataset, tmp_path: Path
) -> None:
    trainer = start(fast_plan(eight_pictures, steps=6, checkpoint_every=2), tmp_path)
    _run(trainer, 4)
    assert start(fast_plan(eight_pictures, steps=6, seed=1), tmp_path).step_count == 0
    assert start(fast_plan(eight_pictures, steps=6, checkpoint_every=3), tmp_path).step_count == 4


def test_only_the_last_two_checkpoints_are_kept_and_no_temporary_folder(
    eight_pictures: Dataset, tmp_path: Path
) -> None:
    trainer = start(fast_plan(eight_pictures, steps=5, checkpoint_every=1), tmp_path)
    _run(trainer, 5)
    folders = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert folders == ["step-000004", "step-000005"]
    assert {p.name for p in (tmp_path / "checkpoints" / "step-000005").iterdir()} == {
        "adapters.safetensors",
        "state.pt",
        "plan.json",
    }


@pytest.mark.parametrize("te_lr", [1e-3, 0.0])
def test_the_served_model_never_sees_the_adapters(
    eight_pictures: Dataset, tmp_path: Path, te_lr: float
) -> None:
    parts = tiny_parts()
    served = {"unet": parts.unet, "te": parts.text_encoder}
    for model in served.values():
        model.requires_grad_(True)  # as a loaded model's weights are
    before = {f"{n}.{k}": v.clone() for n, m in served.items() for k, v in m.state_dict().items()}
    plan = fast_plan(eight_pictures, steps=3, te_lr=te_lr)
    trainer = Trainer.start(parts, plan, tmp_path, "cpu", torch.float32)
    _run(trainer, 3)
    after = {f"{n}.{k}": v for n, m in served.items() for k, v in m.state_dict().items()}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert all(p.grad is None for model in served.values() for p in model.parameters())
    assert (trainer.text_encoder is None) == (te_lr == 0)
    assert trainer.reserved_bytes > sum(t.numel() * 4 for t in parts.unet.state_dict().values())


def test_samples_at_weight_zero_are_the_base_models(eight_pictures: Dataset, tmp_path) -> None:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    trainer = start(fast_plan(eight_pictures, steps=4), tmp_path)
    _run(trainer, 4)
    trained = trainer.sample(["fox"], [7], weight=1.0, steps=3)[0]
    off = trainer.sample(["fox"], [7], weight=0.0, steps=3)[0]
    parts = tiny_parts()
    base = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(parts.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    expected = base(
        ["fox"], height=256, width=256, num_inference_steps=3,
        generator=[torch.Generator().manual_seed(7)],
    ).images[0]  # fmt: skip
    as_array = lambda image: np.asarray(image, dtype=np.int16)  # noqa: E731
    assert np.abs(as_array(off) - as_array(expected)).max() <= 1
    assert np.abs(as_array(trained) - as_array(expected)).mean() > 0.2
    assert trainer.sample(["fox"], [7], weight=1.0, steps=3)[0].tobytes() == trained.tobytes()
