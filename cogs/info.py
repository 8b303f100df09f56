"""What is going on: `/queue` (your jobs, with Cancel), `/status` (the bot) and `/help`."""

from __future__ import annotations

from collections.abc import Sequence

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import QueuedJob, ServiceStatus, TrainingRun
from cogs import texts
from cogs.client import DreamcordClient
from cogs.fitting import FIELD_VALUE, MESSAGE, fit_embed, fit_escaped, fit_lines
from cogs.status import CancelButton

Interaction = discord.Interaction[DreamcordClient]

MAX_LISTED = 12
"""Jobs listed by /queue: each gets a Cancel button (a message holds 25), and all their lines
fit one message with `QUEUE_PROMPT_SHOWN` characters of each prompt."""
QUEUE_PROMPT_SHOWN = 80
REFERENCE_PIXELS = 512 * 512
DOCS = "README.md, section The prompt language,"

HELP = f"""\
**Dreamcord** draws images with Stable Diffusion 1.5 on this server's own GPU.

**Make images**
`/imagine prompt:a fox in the snow, watercolor` - four images in a grid
`/imagine prompt:a castle (at dusk:1.3) --ar 3:2 --no people` - weights and flags
`/imagine prompt:portrait <lora:ghibli:0.8>` - a LoRA your admins added
Options: negative, size (`512x768` or `2:3`), count, seed, steps, cfg, sampler, schedule, hires.
`control_image` + `control` - follow a picture's edges, or a ready depth map or pose (ControlNet)
`/blend image1: image2:` - mix 2 to 5 pictures (`/imagine image_prompt:` one, `--iw 0-3`)

**Prompt language** (A1111): `(word:1.2)` stronger, `[word]` weaker, `BREAK` starts a new \
chunk, `<lora:name:weight>`, flags `--ar 3:2`, `--size 512x768`, `--no text`, `--seed N`, \
`--steps N`, `--cfg N`, `--count N`, `--hires`, `--sref ID` (an earlier image's style).

**Under a result**: U1-U4 upscale one image, V1-V4 make variations, 🔄 Reroll new seeds, \
✏️ Edit the prompt, ⭐ Favourite, ℹ️ Info (parameters, seed, lineage), 🗑️ Delete.

**Yours**: `/settings` your defaults · `/history` and `/favourites` (add `publish:True` to \
share) · `/show id:12` post a result again · `/queue` your jobs (Cancel) · `/status` the bot.
**Admins**: `/policy show|set|reset` channels, NSFW words, limits, cooldown.

Every PNG carries its parameters, so A1111, Forge or ComfyUI can reproduce it. \
More: `{DOCS}` in the project.
"""


def queue_lines(jobs: Sequence[QueuedJob]) -> list[str]:
    """One line per job: its number, prompt excerpt, and where it is."""
    lines = []
    for number, job in enumerate(jobs[:MAX_LISTED], start=1):
        prompt = fit_escaped(job.prompt.strip() or "(empty prompt)", QUEUE_PROMPT_SHOWN)
        if job.running:
            where = f"🎨 running, ready in {texts.duration(job.eta_s)}"
        else:
            place = f"#{job.position}" if job.position else "next"
            where = f"⏳ {place} in the queue, ready in {texts.duration(job.eta_s)}"
        images = "image" if job.images == 1 else "images"
        lines.append(f"**{number}.** {prompt} ({job.images} {images}) - {where}")
    if len(jobs) > MAX_LISTED:
        lines.append(f"…and {len(jobs) - MAX_LISTED} more")
    return lines


def queue_text(jobs: Sequence[QueuedJob], waiting: int) -> str:
    """The /queue message: a header, then one line per listed job."""
    header = f"**Your jobs** ({waiting} waiting in all)"
    return f"{header}\n{fit_lines(queue_lines(jobs), MESSAGE - len(header) - 1)}"


def queue_view(jobs: Sequence[QueuedJob]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for number, job in enumerate(jobs[:MAX_LISTED], start=1):
        view.add_item(CancelButton(job.job_id, label=f"Cancel {number}"))
    return view


def training_line(run: TrainingRun, eta_s: float | None) -> str:
    """One run in /status: name, state, step/total, loss, ETA."""
    loss = f", loss {run.last_loss:.4f}" if run.last_loss is not None else ""
    eta = f", ETA {texts.duration(eta_s)}" if eta_s is not None and run.state == "running" else ""
    return f"`{run.name}`: {run.state}, step {run.step}/{run.total}{loss}{eta}"


def status_embed(status: ServiceStatus) -> discord.Embed:
    """The bot's state as an embed: model, device, memory, queue, speed, LoRAs, worker."""
    colour = discord.Colour.green() if status.worker_ok else discord.Colour.red()
    embed = discord.Embed(title="Dreamcord status", colour=colour)
    embed.add_field(name="Model", value=status.model or "unknown")
    embed.add_field(name="Device", value=status.device or "unknown")
    if status.memory_total_bytes:
        used = (status.memory_used_bytes or 0) / 1024**3
        total = status.memory_total_bytes / 1024**3
        embed.add_field(name="GPU memory", value=f"{used:.1f} / {total:.1f} GiB")
    embed.add_field(
        name="Queue", value=f"{status.waiting} waiting, {status.running} running", inline=False
    )
    per_image = REFERENCE_PIXELS / status.pixel_steps_per_s if status.pixel_steps_per_s else 0
    embed.add_field(
        name="Speed",
        value=f"{1 / per_image:.2f} steps/s at 512x512" if per_image else "not measured yet",
    )
    embed.add_field(name="LoRAs", value=str(status.loras))
    embed.add_field(name="Worker", value=status.worker, inline=False)
    if status.workers:
        lines = "\n".join(row.describe() for row in status.workers)
        embed.add_field(name=f"Remote workers ({len(status.workers)})", value=lines, inline=False)
    return fit_embed(embed)


class Info(commands.Cog):
    """Read-only commands about the queue and the bot."""

    def __init__(self, bot: DreamcordClient) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Your jobs: position, wait, and Cancel")
    async def queue(self, interaction: Interaction) -> None:
        service = interaction.client.app.jobs
        jobs = service.jobs_of(interaction.user.id)
        if not jobs:
            await interaction.response.send_message(
                "You have no jobs waiting or running. Start one with /imagine.", ephemeral=True
            )
            return
        await interaction.response.send_message(
            queue_text(jobs, service.waiting_count()),
            view=queue_view(jobs),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="status", description="Model, device, memory, queue and speed")
    async def status(self, interaction: Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        app = interaction.client.app
        status = await app.jobs.status()
        embed = status_embed(status)
        runs = await app.training.runs(interaction.guild_id)
        if runs:
            lines = [training_line(run, app.training.eta_s(run)) for run in runs]
            embed.add_field(name="Training", value=fit_lines(lines, FIELD_VALUE), inline=False)
        await interaction.followup.send(embed=fit_embed(embed), ephemeral=True)

    @app_commands.command(name="help", description="How to use Dreamcord, with examples")
    async def help(self, interaction: Interaction) -> None:
        await interaction.response.send_message(
            HELP, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )
