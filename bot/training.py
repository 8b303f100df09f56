"""LoRA training runs for a server: checked, planned, run on the shared GPU, registered when done.

A run goes: `prepare` (who may train, the pictures opened and checked, the plan, the name free,
the steps under the server's cap; nothing is stored yet, and a refusal leaves nothing behind),
then `begin` (a `training_runs` row, the pictures moved into the run's own folder, the run
handed to the worker as background work) or `discard`. The worker runs it between image batches
(pipeline.background); its events come back here, are stored (step, loss) and passed on to the
`TrainingListener` (the Discord presenter). When the file is exported it is registered in the
LoRA library with its trigger word. After a restart `recover` hands unfinished runs to the
worker again; the trainer resumes from the run's last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.downloads import download
from bot.guild import Actor, GuildRules, GuildSettings
from bot.libraries import download_rules, size_text
from bot.library import safe_filename
from data.registry import LoraEntry
from data.training import RunState, TrainingRepository, TrainingRun
from pipeline.background import BackgroundState, BackgroundTicket, BackgroundWork
from pipeline.errors import UserError
from pipeline.training.dataset import DatasetLimits, open_dataset
from pipeline.training.plan import TrainingOptions, TrainingPlan, plan_training
from pipeline.training_work import (
    TrainingExported,
    TrainingProgress,
    TrainingSamples,
)

if TYPE_CHECKING:
    from bot.libraries import AuditedLibrary
    from bot.settings import Settings
    from pipeline.worker import Worker

log = logging.getLogger(__name__)

TRAINING_FOLDER = "training/_runs"
"""Under DATA_DIR, beside `dreamcord train`'s `training/<name>` folders: no LoRA name starts
with '_', so the two never meet."""
DATASET = "dataset"
EXPORT = "lora.safetensors"
FAILED = "training failed because of an internal error; it has been logged"
NOT_ALLOWED = (
    "only this server's admins, and members of the roles they allow "
    "(/policy set add_training_role), can train LoRAs here"
)

StartRun = Callable[[TrainingPlan, Path, Path], BackgroundWork]
"""Builds a run's background work on the model thread: plan, work folder, export path."""


@dataclass(frozen=True)
class Trainee:
    """Who asks to train, as the server sees them."""

    actor: Actor
    is_admin: bool
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TrainingAsk:
    """What `/lora train` or the CLI asked for; None: the preset's choice."""

    name: str
    trigger: str | None = None
    preset: str = "character"
    steps: int | None = None
    rank: int | None = None
    resolution: int | None = None

    def options(self, checkpoint_every: int) -> TrainingOptions:
        """The run's options; a chosen rank brings alpha = rank / 2, as the guides advise."""
        alpha = self.rank / 2 if self.rank is not None else None
        return TrainingOptions.for_preset(
            self.name,
            self.preset,
            trigger=self.trigger,
            steps=self.steps,
            rank=self.rank,
            alpha=alpha,
            resolution=self.resolution,
            checkpoint_every=checkpoint_every,
        )


@dataclass(frozen=True)
class PreparedRun:
    """A checked plan whose pictures wait in `folder` until `begin` or `discard`."""

    plan: TrainingPlan
    folder: Path
    estimated_s: float | None
    """From the speed measured on this bot; None before any run measured it."""

    def describe(self) -> str:
        if self.estimated_s is None:
            return self.plan.describe() + "\ntime: measured once the first steps ran"
        return self.plan.describe(self.plan.total_steps / self.estimated_s)


class TrainingListener:
    """What the presenter plugs in; every method runs on the event loop. Override what you need."""

    async def on_progress(self, run: TrainingRun, progress: TrainingProgress) -> None:
        """A step was taken (called for every step: coalesce edits yourself)."""

    async def on_samples(self, run: TrainingRun, samples: TrainingSamples) -> None:
        """An epoch ended; its samples at fixed seeds."""

    async def on_done(self, run: TrainingRun, entry: LoraEntry, path: Path) -> None:
        """The LoRA is registered; `path` is its file in the library."""

    async def on_ended(self, run: TrainingRun, message: str) -> None:
        """The run failed or was cancelled; `message` is fit to show."""


def check_training_upload(filename: str, size: int, max_bytes: int) -> None:
    """A training set comes as one zip of at most `max_bytes`; a UserError says what is wrong."""
    if not filename.lower().endswith(".zip"):
        raise UserError(
            f"{safe_filename(filename)} is not a .zip: zip the pictures (and their .txt "
            "captions) and attach the zip"
        )
    if size > max_bytes:
        raise UserError(
            f"the zip is {size_text(size)}, more than the {size_text(max_bytes)} allowed "
            "(TRAINING_MAX_UPLOAD_MB): use fewer or smaller pictures"
        )


def may_train(policy: GuildSettings, trainee: Trainee) -> bool:
    return trainee.is_admin or any(role in policy.training_roles for role in trainee.role_ids)


class TrainingService:
    """Starts, runs, pauses, cancels and recovers training runs (see the module docstring)."""

    def __init__(
        self,
        repo: TrainingRepository,
        worker: Callable[[], Worker],
        loras: AuditedLibrary,
        guild: GuildRules,
        settings: Settings,
        start_run: StartRun | None,
    ) -> None:
        self._repo = repo
        self._worker = worker
        self._loras = loras
        self._guild = guild
        self._settings = settings
        self._start_run = start_run
        self.listener = TrainingListener()
        self.seconds_per_step: float | None = None
        """Measured on this bot (smoothed): the ETA of plans and runs."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_event: dict[int, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def folder(self) -> Path:
        return self._settings.data_dir / TRAINING_FOLDER

    # --- starting ---

    async def check_allowed(self, trainee: Trainee) -> GuildSettings:
        """Whether this member may start a run here now; before any picture is fetched."""
        if self._start_run is None:
            raise UserError("this bot's engine cannot train (it runs on remote workers)")
        policy = await self._guild.settings(trainee.actor.guild_id)
        if not may_train(policy, trainee):
            raise UserError(NOT_ALLOWED)
        if policy.training is not None:
            raise UserError(
                "training is paused on this server: an admin resumes it with "
                "/policy set training:on"
            )
        return policy

    def check_upload(self, filename: str, size: int) -> None:
        """Refuse a training upload by its name and size, before it is downloaded."""
        check_training_upload(filename, size, self._settings.training_max_upload_mb * 1024**2)

    async def prepare_bytes(
        self, data: bytes, filename: str, ask: TrainingAsk, trainee: Trainee
    ) -> PreparedRun:
        """`prepare` for an uploaded zip (a Discord attachment); `prepare` checks the member."""
        self.check_upload(filename, len(data))
        path = self.folder / "uploads" / f"{uuid.uuid4().hex}.zip"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        try:
            await asyncio.to_thread(write)
            return await self.prepare(path, ask, trainee)
        finally:
            await asyncio.to_thread(path.unlink, True)

    async def prepare_url(self, url: str, ask: TrainingAsk, trainee: Trainee) -> PreparedRun:
        """`prepare` for a zip behind a link, within the bot's download rules."""
        await self.check_allowed(trainee)
        rules = download_rules(self._settings)
        folder = self.folder / "uploads"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        downloaded = await download(
            url,
            folder,
            max_bytes=self._settings.training_max_upload_mb * 1024**2,
            allowed_hosts=rules.allowed_hosts,
            require_https=rules.require_https,
            deadline_s=rules.deadline_s,
        )
        try:
            self.check_upload(downloaded.filename, downloaded.path.stat().st_size)
            return await self.prepare(downloaded.path, ask, trainee)
        finally:
            await asyncio.to_thread(downloaded.path.unlink, True)

    async def prepare(self, source: Path, ask: TrainingAsk, trainee: Trainee) -> PreparedRun:
        """Check everything a run needs before anything is stored (see the module docstring)."""
        policy = await self.check_allowed(trainee)
        options = ask.options(self._settings.training_checkpoint_every)
        await self._check_name_free(options.name)
        folder = self.folder / f"new-{uuid.uuid4().hex}"
        try:
            plan = await asyncio.to_thread(self._plan, source, folder, options)
            cap = min(policy.training_max_steps or self._settings.training_max_steps,
                      self._settings.training_max_steps)  # fmt: skip
            if plan.total_steps > cap:
                raise UserError(
                    f"that is {plan.total_steps:,} steps, more than the {cap:,} this server "
                    "allows: give fewer steps (steps:), or fewer pictures"
                )
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        estimate = None
        if self.seconds_per_step is not None:
            estimate = plan.total_steps * self.seconds_per_step
        return PreparedRun(plan, folder, estimate)

    def _plan(self, source: Path, folder: Path, options: TrainingOptions) -> TrainingPlan:
        """Open the pictures into `folder/dataset` (a folder source is copied there first)."""
        dataset_dir = folder / DATASET
        if source.is_dir():
            # Checked first in place, so a refused folder is not copied at all.
            open_dataset(source, dataset_dir, self._limits())
            shutil.copytree(source, dataset_dir)
            dataset = open_dataset(dataset_dir, dataset_dir, self._limits())
        else:
            dataset = open_dataset(source, dataset_dir, self._limits())
        return plan_training(dataset, options)

    def _limits(self) -> DatasetLimits:
        total = self._settings.training_max_upload_mb * 1024**2
        return DatasetLimits(max_total_bytes=max(total * 8, DatasetLimits().max_total_bytes))

    async def discard(self, prepared: PreparedRun) -> None:
        await asyncio.to_thread(shutil.rmtree, prepared.folder, True)

    async def begin(self, prepared: PreparedRun, trainee: Trainee) -> TrainingRun:
        """Store the run, give it its own folder and hand it to the worker."""
        options = prepared.plan.options
        try:
            await self._check_name_free(options.name)
            run = await self._repo.create(
                guild_id=trainee.actor.guild_id,
                user_id=trainee.actor.user_id or 0,
                name=options.name,
                options=options.to_json(),
                total=prepared.plan.total_steps,
                work_dir=str(prepared.folder),
            )
        except BaseException:
            await self.discard(prepared)
            raise
        work_dir = self.folder / f"run-{run.id}"
        await asyncio.to_thread(prepared.folder.rename, work_dir)
        await self._repo.move(run.id, str(work_dir))
        plan = await asyncio.to_thread(self._replan, work_dir, options)
        run = await self._get(run.id)
        self._hand_over(run, plan)
        return run

    def _replan(self, work_dir: Path, options: TrainingOptions) -> TrainingPlan:
        """The plan over the run's own copy of the pictures (also after a restart)."""
        dataset = open_dataset(work_dir / DATASET, work_dir / DATASET, self._limits())
        return plan_training(dataset, options)

    async def _check_name_free(self, name: str) -> None:
        try:
            await self._loras.info(name)
        except UserError:
            return
        raise UserError(f"a LoRA named {name!r} already exists: choose another name")

    def _hand_over(self, run: TrainingRun, plan: TrainingPlan) -> None:
        start_run = self._start_run
        assert start_run is not None
        work_dir = Path(run.work_dir)
        export = work_dir / EXPORT
        worker = self._worker()
        ticket = worker.background.add(
            str(run.id),
            lambda: start_run(plan, work_dir, export),
            lambda event: self._on_event(run.id, event),
        )
        self._spawn(self._follow(run.id, ticket))

    async def attach_status(self, run_id: int, channel_id: int, message_id: int) -> None:
        """Where the run's status message is, so edits find it after a restart."""
        await self._repo.set_message(run_id, channel_id, message_id)

    # --- after a restart ---

    async def recover(self) -> None:
        """Hand unfinished runs back to the worker, oldest first; paused ones stay paused."""
        if self._start_run is None:
            return
        for run in await self._repo.unfinished():
            try:
                plan = await asyncio.to_thread(
                    self._replan, Path(run.work_dir), TrainingOptions.from_json(run.options)
                )
            except UserError as error:
                await self._repo.set_state(run.id, RunState.FAILED, str(error))
                continue
            self._hand_over(run, plan)
            policy = await self._guild.settings(run.guild_id)
            if run.state is RunState.PAUSED or policy.training is not None:
                self._worker().background.pause(str(run.id))

    # --- controls ---

    async def cancel(self, run_id: int, trainee: Trainee) -> TrainingRun:
        """Cancel a run: its trainer, or an admin of its server."""
        run = await self._get(run_id)
        if run.user_id != trainee.actor.user_id and not (
            trainee.is_admin and trainee.actor.guild_id == run.guild_id
        ):
            raise UserError("only the member who started this training, or an admin, can stop it")
        if not run.unfinished:
            raise UserError(f"the training of {run.name!r} has already ended ({run.state})")
        if not self._worker().background.cancel(str(run_id)):
            await self._repo.set_state(run_id, RunState.CANCELLED)
        return run

    async def apply_switch(self, guild_id: int) -> None:
        """Pause or resume a server's runs after its training switch changed (/policy set)."""
        paused = (await self._guild.settings(guild_id)).training is not None
        for run in await self._repo.unfinished(guild_id):
            self._worker().background.pause(str(run.id), paused)
            if run.state is not RunState.QUEUED:
                await self._repo.set_state(run.id, RunState.PAUSED if paused else RunState.RUNNING)

    async def runs(self, guild_id: int | None) -> list[TrainingRun]:
        """A server's unfinished runs (all of them outside a server), for /status."""
        return await self._repo.unfinished(guild_id)

    async def get(self, run_id: int) -> TrainingRun:
        return await self._get(run_id)

    def eta_s(self, run: TrainingRun) -> float | None:
        if self.seconds_per_step is None:
            return None
        return (run.total - run.step) * self.seconds_per_step

    async def stop(self) -> None:
        """After the worker stopped: store the last events, stop following the runs."""
        self._stopped = True
        handling = list(self._last_event.values())
        await asyncio.gather(*handling, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the worker's events ---

    def _on_event(self, run_id: int, event: object) -> None:
        """On the loop, in step order: each event is handled after the one before it."""
        if self._stopped:
            return
        before = self._last_event.get(run_id)
        task = self._spawn(self._handle(run_id, event, before))
        self._last_event[run_id] = task

    async def _handle(self, run_id: int, event: object, before: asyncio.Task[None] | None) -> None:
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)
        if isinstance(event, TrainingProgress):
            self._measure(event.seconds)
            run = await self._get(run_id)
            if run.state is RunState.QUEUED:
                await self._repo.set_state(run_id, RunState.RUNNING)
            await self._repo.record_step(run_id, event.step, event.loss)
            await self.listener.on_progress(await self._get(run_id), event)
        elif isinstance(event, TrainingSamples):
            await self.listener.on_samples(await self._get(run_id), event)
        elif isinstance(event, TrainingExported):
            await self._register(run_id, event.path)

    async def _follow(self, run_id: int, ticket: BackgroundTicket) -> None:
        state = await ticket.ended
        last = self._last_event.pop(run_id, None)
        if last is not None:
            await asyncio.gather(last, return_exceptions=True)
        if state is BackgroundState.DONE:
            return  # registered by the export event
        run = await self._get(run_id)
        if state is BackgroundState.CANCELLED:
            message = f"the training of {run.name!r} was cancelled"
            await self._repo.set_state(run_id, RunState.CANCELLED)
        else:
            message = FAILED
            if isinstance(ticket.error, UserError):
                message = f"the training of {run.name!r} failed: {ticket.error}"
            await self._repo.set_state(run_id, RunState.FAILED, message)
        await self._remove_folder(run)
        await self.listener.on_ended(await self._get(run_id), message)

    async def _register(self, run_id: int, path: Path) -> None:
        """Add the exported file to the LoRA library under the run's name and trigger word."""
        run = await self._get(run_id)
        options = TrainingOptions.from_json(run.options)
        actor = Actor(run.guild_id, run.user_id)
        try:
            entry = await self._loras.add_file(
                path, actor, name=options.name, triggers=(options.trigger,), weight=1.0
            )
        except UserError as error:
            await self._repo.set_state(run_id, RunState.FAILED, str(error))
            await self.listener.on_ended(await self._get(run_id), str(error))
            return
        await self._repo.set_state(run_id, RunState.DONE)
        await self._remove_folder(run)
        file = self._settings.data_dir / entry.path
        await self.listener.on_done(await self._get(run_id), entry, file)

    async def _remove_folder(self, run: TrainingRun) -> None:
        """A run's pictures and checkpoints go once it ended (the LoRA is in the library)."""
        await asyncio.to_thread(shutil.rmtree, run.work_dir, True)

    def _measure(self, seconds: float) -> None:
        smoothing = 0.3
        if self.seconds_per_step is None:
            self.seconds_per_step = seconds
        else:
            self.seconds_per_step += smoothing * (seconds - self.seconds_per_step)

    async def _get(self, run_id: int) -> TrainingRun:
        run = await self._repo.get(run_id)
        if run is None:
            raise UserError(f"there is no training run {run_id}")
        return run

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a training event failed", exc_info=task.exception())
