"""TrainingService over the real container: SQLite file, tiny engine, worker and trainer."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path

import pytest

from bot.container import Services, open_services
from bot.guild import Actor
from bot.settings import Settings, load_settings
from bot.training import NOT_ALLOWED, Trainee, TrainingAsk, TrainingListener
from data.registry import LoraEntry
from data.training import RunState, TrainingRun
from pipeline.errors import UserError
from pipeline.training_work import TrainingProgress, TrainingSamples
from tests.bot.test_jobs import RecordingDelivery
from tests.pipeline.training.pictures import picture, write_zip

pytestmark = pytest.mark.slow

GUILD = 10
ADMIN = Trainee(Actor(GUILD, 1), is_admin=True)
MEMBER = Trainee(Actor(GUILD, 2), is_admin=False, role_ids=(77,))


def settings_in(tmp_path: Path, **options) -> Settings:
    return load_settings(
        None,
        model="tiny",
        data_dir=tmp_path / "data",
        device="cpu",
        training_sample_steps=2,
        **options,
    )


def pictures_zip(path: Path, count: int = 2) -> Path:
    """`count` 256 px pictures in kohya's `1_fox` folder (one repeat), with captions."""
    files: dict[str, bytes | str] = {}
    for index in range(count):
        files[f"1_fox/{index}.png"] = picture(256, 256, seed=index)
        files[f"1_fox/{index}.txt"] = "fox, snow"
    return write_zip(path, files)


class Recorder(TrainingListener):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.samples: list[TrainingSamples] = []
        self.done: list[tuple[TrainingRun, LoraEntry, Path]] = []
        self.ended: list[tuple[TrainingRun, str]] = []

    async def on_progress(self, run: TrainingRun, progress: TrainingProgress) -> None:
        self.steps.append(progress.step)

    async def on_samples(self, run: TrainingRun, samples: TrainingSamples) -> None:
        self.samples.append(samples)

    async def on_done(self, run: TrainingRun, entry: LoraEntry, path: Path) -> None:
        self.done.append((run, entry, path))

    async def on_ended(self, run: TrainingRun, message: str) -> None:
        self.ended.append((run, message))


async def open_with(settings: Settings, listener: Recorder) -> Services:
    services = await open_services(settings, RecordingDelivery())
    services.app.training.listener = listener
    return services


async def until(condition, timeout_s: float = 240.0) -> None:
    """Wait until `condition()` (a value or an awaitable) is true."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def leftovers(settings: Settings) -> list[Path]:
    folder = settings.data_dir / "training" / "_runs"
    found = list(folder.rglob("*")) if folder.exists() else []
    return [path for path in found if not path.is_dir()]


async def test_a_run_trains_samples_each_epoch_and_registers_the_lora(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    recorder = Recorder()
    services = await open_with(settings, recorder)
    try:
        training = services.app.training
        ask = TrainingAsk("foxy", trigger="fx", steps=4, rank=4, resolution=256)
        prepared = await training.prepare(pictures_zip(tmp_path / "in.zip"), ask, ADMIN)
        assert prepared.plan.total_steps == 4 and prepared.plan.epochs == 2
        assert "4 steps in all" in prepared.describe()
        run = await training.begin(prepared, ADMIN)
        await until(lambda: bool(recorder.done or recorder.ended))
        assert recorder.ended == []
        _run, entry, path = recorder.done[0]
        assert (entry.name, entry.triggers, entry.default_weight) == ("foxy", ("fx",), 1.0)
        assert path.is_file()
        assert recorder.steps == [1, 2, 3, 4]
        # Two pictures, one repeat: an epoch is two steps; each shows 2 prompts x 2 seeds.
        assert [s.epoch for s in recorder.samples] == [1, 2]
        assert recorder.samples[0].prompts == ("fx, fox, snow", "fox, snow")
        assert all(len(s.images) == 4 for s in recorder.samples)
        stored = await training.get(run.id)
        assert (stored.state, stored.step, stored.total) == (RunState.DONE, 4, 4)
        assert len(stored.losses) == 4 and stored.last_loss == stored.losses[-1]
        assert "foxy" in services.app.requests.names.loras
        assert leftovers(settings) == []  # pictures and checkpoints go with the run
    finally:
        await services.close()


async def test_a_restart_resumes_the_run_from_its_last_checkpoint(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, training_checkpoint_every=2)
    first = Recorder()
    services = await open_with(settings, first)
    training = services.app.training
    ask = TrainingAsk("resumed", steps=8, rank=4, resolution=256)
    run = await training.begin(
        await training.prepare(pictures_zip(tmp_path / "in.zip", 4), ask, ADMIN), ADMIN
    )

    async def past_a_checkpoint() -> bool:
        return (await training.get(run.id)).step >= 3

    await until(past_a_checkpoint)
    await services.close()  # as a stop would; the run's row stays unfinished
    stopped_at = first.steps[-1]
    assert stopped_at < 8

    second = Recorder()
    services = await open_with(settings, second)
    try:
        await until(lambda: bool(second.done or second.ended))
        assert second.ended == []
        # It went on from the checkpoint at an even step, not from the start.
        resumed_from = second.steps[0] - 1
        assert resumed_from >= 2 and resumed_from % 2 == 0 and resumed_from <= stopped_at
        assert second.steps == list(range(resumed_from + 1, 9))
        assert (await services.app.training.get(run.id)).state is RunState.DONE
    finally:
        await services.close()


async def test_the_trainer_cancels_a_run_and_nothing_is_registered(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    recorder = Recorder()
    services = await open_with(settings, recorder)
    try:
        training = services.app.training
        ask = TrainingAsk("gone", steps=50, rank=4, resolution=256)
        run = await training.begin(
            await training.prepare(pictures_zip(tmp_path / "in.zip"), ask, ADMIN), ADMIN
        )
        await until(lambda: bool(recorder.steps))
        with pytest.raises(UserError, match="only the member who started"):
            await training.cancel(run.id, MEMBER)
        await training.cancel(run.id, ADMIN)
        await until(lambda: bool(recorder.ended))
        assert recorder.ended[0][1] == "the training of 'gone' was cancelled"
        assert (await training.get(run.id)).state is RunState.CANCELLED
        assert recorder.done == [] and "gone" not in services.app.requests.names.loras
        assert leftovers(settings) == []
    finally:
        await services.close()


async def test_the_server_switch_pauses_its_runs_between_steps(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    recorder = Recorder()
    services = await open_with(settings, recorder)
    try:
        training = services.app.training
        ask = TrainingAsk("held", steps=6, rank=4, resolution=256)
        run = await training.begin(
            await training.prepare(pictures_zip(tmp_path / "in.zip"), ask, ADMIN), ADMIN
        )
        await until(lambda: bool(recorder.steps))
        await services.app.guild.set_policy(ADMIN.actor, "policy.set", training="paused")
        await training.apply_switch(GUILD)
        held = (await training.get(run.id)).step
        await asyncio.sleep(1.0)
        # At most the step running when the switch flipped finished after it.
        assert len(recorder.steps) <= held + 1
        assert (await training.get(run.id)).state is RunState.PAUSED
        with pytest.raises(UserError, match="training is paused on this server"):
            await training.prepare(tmp_path / "in.zip", TrainingAsk("other"), ADMIN)
        await services.app.guild.set_policy(ADMIN.actor, "policy.set", training="on")
        await training.apply_switch(GUILD)
        await until(lambda: bool(recorder.done))
        assert recorder.steps[-1] == 6
    finally:
        await services.close()


@pytest.mark.parametrize(
    ("files", "ask", "trainee", "message"),
    [
        ({"1_fox/a.txt": "no pictures"}, TrainingAsk("x"), ADMIN, "no pictures"),
        ({"1_fox/a.png": picture(64, 64)}, TrainingAsk("x"), ADMIN, "256"),
        (None, TrainingAsk("x", steps=5_000), ADMIN, "more than the 3,000"),
        (None, TrainingAsk("x"), MEMBER, NOT_ALLOWED),
        (None, TrainingAsk("taken"), ADMIN, "a LoRA named 'taken' already exists"),
    ],
)
async def test_refusals_say_why_and_leave_nothing_behind(
    tmp_path: Path, files, ask: TrainingAsk, trainee: Trainee, message: str
) -> None:
    from tests.e2e.test_library import write_tiny_lora

    settings = settings_in(tmp_path)
    services = await open_with(settings, Recorder())
    try:
        await services.app.libraries.loras.add_file(
            write_tiny_lora(tmp_path / "taken.safetensors", "taken"), ADMIN.actor
        )
        source = pictures_zip(tmp_path / "in.zip") if files is None else tmp_path / "in.zip"
        if files is not None:
            write_zip(source, files)
        with pytest.raises(UserError) as refused:
            await services.app.training.prepare(source, ask, trainee)
        assert message.lower() in str(refused.value).lower()
        assert leftovers(settings) == []
        assert await services.app.training.runs(GUILD) == []
    finally:
        await services.close()
