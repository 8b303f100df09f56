"""`/lora train` in Discord: the plan to confirm, the run's status message, samples, the result.

The command answers privately with the plan (pictures, repeats, epochs, steps, the time from the
measured speed) and Start / Discard. Start posts a public status message that the presenter
edits with the step, the loss and a small loss chart (coalesced: at most one edit per interval,
the latest state wins), with a Cancel button (`dc:tc:<run id>`, for its trainer or an admin,
working after restarts). After each epoch the samples at fixed seeds are posted (top row with
the trigger word, bottom row without). When done: the LoRA is registered, its file attached when
it fits the upload limit, and its preview at weights 0 / 0.5 / 1 posted as for `/lora add`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.app import (
    Origin,
    PreparedRun,
    RunState,
    Trainee,
    TrainingAsk,
    TrainingListener,
    TrainingRun,
    size_text,
)
from cogs.charts import loss_chart
from cogs.checks import ServedItem, actor_of, is_admin
from cogs.client import DreamcordClient
from cogs.errors import guarded
from cogs.fitting import MESSAGE, fit, fit_escaped
from cogs.grid import compose_grid
from cogs.presenter import DEFAULT_UPLOAD_LIMIT, EDIT_INTERVAL_S

if TYPE_CHECKING:
    from bot.app import LoraEntry
    from pipeline.training_work import TrainingProgress, TrainingSamples

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamcordClient]

CONFIRM_TIMEOUT_S = 300.0


def trainee_of(interaction: Interaction) -> Trainee:
    member = interaction.user
    roles = tuple(role.id for role in member.roles) if isinstance(member, discord.Member) else ()
    return Trainee(actor_of(interaction), is_admin(interaction), roles)


def ask_of(
    name: str,
    trigger: str | None,
    preset: str | None,
    steps: int | None,
    rank: int | None,
    resolution: int | None,
) -> TrainingAsk:
    return TrainingAsk(name, trigger, preset or "character", steps, rank, resolution)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "measuring"
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02} min"


def status_text(run: TrainingRun, eta_s: float | None) -> str:
    """The status message's line: who trains what, and where it stands."""
    head = f"🧪 Training LoRA `{run.name}` for <@{run.user_id}>"
    loss = f" · loss {run.last_loss:.4f}" if run.last_loss is not None else ""
    if run.state is RunState.DONE:
        return f"✅ LoRA `{run.name}` is trained ({run.total} steps{loss}) and in the library."
    if run.state in (RunState.FAILED, RunState.CANCELLED):
        return f"{head}: ended at step {run.step}/{run.total}: {run.error or run.state}"
    where = {RunState.QUEUED: "waiting for its turn", RunState.PAUSED: "paused"}.get(
        run.state, f"ETA {eta_text(eta_s)}"
    )
    return f"{head} · step {run.step}/{run.total}{loss} · {where}"


class TrainCancelButton(
    ServedItem,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"dc:tc:(?P<run>[0-9]{1,18})",
):
    """Cancel a training run (its trainer or an admin of its server)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel training",
                style=discord.ButtonStyle.danger,
                custom_id=f"dc:tc:{run_id}",
            )
        )
        self.run_id = run_id

    @classmethod
    async def from_custom_id(  # type: ignore[override]  # discord.py hands over the Button
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> TrainCancelButton:
        return cls(int(match["run"]))

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await guarded(interaction, self._cancel(interaction))

    async def _cancel(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        run = await interaction.client.app.training.cancel(self.run_id, trainee_of(interaction))
        await interaction.followup.send(
            f"Cancelling the training of `{run.name}`: it stops before its next step.",
            ephemeral=True,
        )


def cancel_view(run_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(TrainCancelButton(run_id))
    return view


class ConfirmTraining(discord.ui.View):
    """Start or Discard under the private plan; the pictures wait until one is pressed."""

    def __init__(self, interaction: Interaction, prepared: PreparedRun, trainee: Trainee) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT_S)
        self.origin = interaction
        self.prepared = prepared
        self.trainee = trainee
        self.settled = False

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return interaction.user.id == self.origin.user.id

    @discord.ui.button(label="Start training", style=discord.ButtonStyle.success)
    async def start(self, interaction: Interaction, _button: discord.ui.Button[Any]) -> None:
        await guarded(interaction, self._start(interaction))

    @discord.ui.button(label="Discard", style=discord.ButtonStyle.secondary)
    async def discard(self, interaction: Interaction, _button: discord.ui.Button[Any]) -> None:
        self.settled = True
        self.stop()
        await self.origin.client.app.training.discard(self.prepared)
        await interaction.response.edit_message(content="Discarded: nothing was queued.", view=None)

    async def _start(self, interaction: Interaction) -> None:
        self.settled = True
        self.stop()
        await interaction.response.edit_message(content="Starting…", view=None)
        training = interaction.client.app.training
        run = await training.begin(self.prepared, self.trainee)
        channel = interaction.channel
        assert isinstance(channel, discord.abc.Messageable)
        message = await channel.send(
            status_text(run, training.eta_s(run)),
            view=cancel_view(run.id),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        await training.attach_status(run.id, message.channel.id, message.id)
        await interaction.edit_original_response(
            content=f"Training started: {message.jump_url}", view=None
        )

    async def on_timeout(self) -> None:
        if not self.settled:
            await self.origin.client.app.training.discard(self.prepared)
            with contextlib.suppress(discord.HTTPException):
                await self.origin.edit_original_response(
                    content="Not started in time: discarded, nothing was queued.", view=None
                )


async def answer_with_plan(
    interaction: Interaction, prepared: PreparedRun, trainee: Trainee
) -> None:
    text = f"**Training plan**\n```\n{prepared.describe()}\n```\nStart it?"
    await interaction.edit_original_response(
        content=fit(text, MESSAGE),
        view=ConfirmTraining(interaction, prepared, trainee),
        allowed_mentions=discord.AllowedMentions.none(),
    )


@dataclass
class _Shown:
    """A run's status message edits: the last one's time and the edit in flight."""

    last_edit: float = 0.0
    editing: asyncio.Task[None] | None = None


PostPreview = Callable[["LoraEntry", Origin], Awaitable[None]]


class TrainingPresenter(TrainingListener):
    """Shows training runs in their channels (see the module docstring)."""

    def __init__(
        self,
        bot: DreamcordClient,
        post_preview: PostPreview,
        edit_interval_s: float = EDIT_INTERVAL_S,
    ) -> None:
        self.bot = bot
        self.post_preview = post_preview
        self.edit_interval_s = edit_interval_s
        self._shown: dict[int, _Shown] = {}

    async def on_progress(self, run: TrainingRun, progress: TrainingProgress) -> None:
        shown = self._shown.setdefault(run.id, _Shown())
        if shown.editing is None or shown.editing.done():
            shown.editing = asyncio.ensure_future(self._edit_later(run.id, shown))

    async def _edit_later(self, run_id: int, shown: _Shown) -> None:
        """One edit after the interval, with the state as it is then (latest wins)."""
        wait = shown.last_edit + self.edit_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        shown.last_edit = time.monotonic()
        run = await self.bot.app.training.get(run_id)
        await self._edit(run, with_chart=True)

    async def _edit(self, run: TrainingRun, with_chart: bool, final: bool = False) -> None:
        if run.channel_id is None or run.message_id is None:
            return
        message = self.bot.get_partial_messageable(run.channel_id).get_partial_message(
            run.message_id
        )
        files = []
        if with_chart and run.losses:
            png = await asyncio.to_thread(loss_chart, run.losses)
            files.append(discord.File(io.BytesIO(png), f"loss-{run.name}.png"))
        view = None if final else cancel_view(run.id)
        try:
            await message.edit(
                content=status_text(run, self.bot.app.training.eta_s(run)),
                attachments=files,
                view=view,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.HTTPException as error:
            log.warning("could not edit the status of training run %s: %s", run.id, error)

    async def on_samples(self, run: TrainingRun, samples: TrainingSamples) -> None:
        if run.channel_id is None:
            return
        columns = len(samples.images) // len(samples.prompts)
        grid = await asyncio.to_thread(_sample_grid, list(samples.images), columns)
        head = (
            f"Samples of `{run.name}` after epoch {samples.epoch} (fixed seeds): top row "
            "with the trigger word, bottom row without · prompts: "
        )
        prompts = " | ".join(samples.prompts)
        await self._send(
            run,
            head + fit_escaped(prompts, MESSAGE - len(head)),
            discord.File(io.BytesIO(grid), f"samples-{run.name}-{samples.epoch}.png"),
        )

    async def on_done(self, run: TrainingRun, entry: LoraEntry, path: Path) -> None:
        await self._finish(run)
        if run.channel_id is None:
            return
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        limit = self._upload_limit(run)
        text = (
            f"LoRA `{entry.name}` is ready: use it as `<lora:{entry.name}:1>` "
            f"(trigger word `{', '.join(entry.triggers)}`)."
        )
        file = None
        if size <= limit:
            file = discord.File(path, f"{entry.name}.safetensors")
        else:
            text += (
                f" The file is {size_text(size)}, over this server's upload limit: the bot's "
                f"owner finds it at DATA_DIR/{entry.path} (`dreamcord lora info {entry.name}`)."
            )
        await self._send(run, text, file)
        origin = Origin(
            user_id=self.bot.user.id if self.bot.user else 0,
            guild_id=run.guild_id,
            channel_id=run.channel_id,
        )
        await self.post_preview(entry, origin)

    async def on_ended(self, run: TrainingRun, message: str) -> None:
        await self._finish(run)

    async def _finish(self, run: TrainingRun) -> None:
        shown = self._shown.pop(run.id, None)
        if shown is not None and shown.editing is not None:
            shown.editing.cancel()
        await self._edit(run, with_chart=True, final=True)

    async def _send(self, run: TrainingRun, text: str, file: discord.File | None) -> None:
        assert run.channel_id is not None
        channel = self.bot.get_partial_messageable(run.channel_id)
        options: dict[str, Any] = {"file": file} if file is not None else {}
        try:
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none(), **options)
        except discord.HTTPException as error:
            log.warning("could not post for training run %s: %s", run.id, error)

    def _upload_limit(self, run: TrainingRun) -> int:
        guild = self.bot.get_guild(run.guild_id) if run.guild_id is not None else None
        return guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT


def _sample_grid(images: list[Any], columns: int) -> bytes:
    """Rows of `columns` images (one row per prompt), as one PNG."""
    rows = [
        compose_grid(images[i : i + columns], labels=False) for i in range(0, len(images), columns)
    ]
    from PIL import Image

    width = max(row.width for row in rows)
    grid = Image.new("RGB", (width, sum(row.height for row in rows)), "black")
    y = 0
    for row in rows:
        grid.paste(row, (0, y))
        y += row.height
    out = io.BytesIO()
    grid.save(out, "PNG")
    return out.getvalue()
