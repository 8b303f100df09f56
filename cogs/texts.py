"""What Dreamcord's messages say: pure text builders, so they are easy to test and to change."""

from __future__ import annotations

from collections.abc import Sequence

from bot.app import ShownUnit, edit_label
from cogs.fitting import MESSAGE, escape, fit, fit_escaped, fit_lines
from pipeline.request import GenerationRequest, Mode

PROMPT_SHOWN = 1200
"""Characters of the escaped prompt shown in a message; Discord allows 2,000 in all."""
FAILURE_SHOWN = 400
"""Characters of a failure's reason: the headline and the reason fit one message together."""

OPERATION_NAMES = {
    Mode.TXT2IMG: "",
    Mode.IMG2IMG: "Image to image",
    Mode.UPSCALE: "Upscale",
    Mode.VARIATION: "Variations",
    Mode.REROLL: "Reroll",
    Mode.INPAINT: "Inpaint",
    Mode.OUTPAINT: "Outpaint",
}


def shown_prompt(request: GenerationRequest) -> str:
    """The prompt in bold, escaped and then cut, so escaping cannot push a message over."""
    return f"**{fit_escaped(request.prompt.strip() or '(empty prompt)', PROMPT_SHOWN)}**"


def headline(request: GenerationRequest, user_id: int) -> str:
    """`**prompt** - <@user> (Upscale)`: the first line of every job message; an edit says
    which (`zoom-out 2`)."""
    operation = edit_label(request) or OPERATION_NAMES.get(request.mode, "")
    suffix = f" ({operation})" if operation else ""
    return f"{shown_prompt(request)} - <@{user_id}>{suffix}"


RECIPE_NOTES_SHOWN = 1800
"""Characters of recipe notes in one reply; Discord allows 2,000."""


def recipe_notes(notes: Sequence[str]) -> str:
    """What a pasted recipe asked for that this job does differently, one line each."""
    header = "ℹ️ From the pasted parameters:"
    lines = [f"- {escape(note)}" for note in notes]
    room = RECIPE_NOTES_SHOWN - len(header) - 1
    return f"{header}\n{fit_lines(lines, room, more=lambda left: f'- and {left} more')}"


def unused_strength(strength: float) -> str:
    return (
        f"Denoising strength: {strength:g} is for image to image (the recipe has no hires "
        "fields): attach the picture with the image option to start from it"
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "soon"
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"


def queued(
    request: GenerationRequest, user_id: int, position: int | None, eta: float | None
) -> str:
    where = f"#{position} in the queue" if position else "starting"
    return f"{headline(request, user_id)}\n⏳ Queued: {where}, ready in {duration(eta)}"


def running(request: GenerationRequest, user_id: int, step: int, total: int) -> str:
    filled = round(10 * step / total) if total else 0
    bar = "▰" * filled + "▱" * (10 - filled)
    unit = "tile" if request.tiles else "step"  # a tiled upscale counts tiles x steps
    return f"{headline(request, user_id)}\n🎨 {bar} {unit} {step}/{total}"


def finished(request: GenerationRequest, user_id: int, seeds: Sequence[int]) -> str:
    seed_text = str(seeds[0]) if len(set(seeds)) == 1 else f"{seeds[0]}-{seeds[-1]}"
    details = f"{request.width}x{request.height}, {request.sampler}, {request.steps} steps"
    return f"{headline(request, user_id)}\nseed {seed_text} · {details}"


def failed(request: GenerationRequest, user_id: int, message: str) -> str:
    if message == "cancelled":
        return f"{headline(request, user_id)}\n🚫 Cancelled"
    return f"{headline(request, user_id)}\n❌ {fit(message, FAILURE_SHOWN)}"


def png_kept(note: str, generation_id: int) -> str:
    """The small print under a result sent as JPEG: the full PNGs stay in the gallery."""
    return (
        f"{note}; the full PNG, with its parameters, is kept: the bot's owner gets it with "
        f"`dreamcord export {generation_id}`"
    )


def ready_in_channel(user_id: int, content: str) -> str:
    """A result posted anew once the interaction token is gone: it mentions the requester."""
    return fit(f"<@{user_id}> your images are ready\n{content}", MESSAGE)


def failed_in_channel(user_id: int, content: str) -> str:
    return fit(f"<@{user_id}> {content}", MESSAGE)


INFO_LINE_SHOWN = 300
"""Characters of the seeds line and of the lineage line of Info; the parameters get the rest."""


def info(
    generation_id: int,
    seeds: Sequence[int],
    parameters: str,
    lineage: Sequence[int],
    controls: Sequence[ShownUnit] = (),
) -> str:
    """Info under a result: the seeds, the PNG parameters in a code block, the lineage and
    the ControlNet units (their maps are attached)."""
    head = fit(f"Generation {generation_id} · seeds {', '.join(map(str, seeds))}", INFO_LINE_SHOWN)
    chain = " ← ".join(f"image {image_id}" for image_id in lineage)
    tail = f"\nLineage: {fit(chain, INFO_LINE_SHOWN)}" if len(lineage) > 1 else ""
    tail += "".join(f"\n{fit(control_line(shown), INFO_LINE_SHOWN)}" for shown in controls)
    # A zero-width space between backticks keeps the parameters from closing the code block.
    code = parameters.replace("`", "`\u200b")
    room = MESSAGE - len(head) - len(tail) - len("\n```\n\n```")
    return f"{head}\n```\n{fit(code, room)}\n```{tail}"


def control_line(shown: ShownUnit) -> str:
    """`ControlNet 1: canny-v11 (canny) · weight 1 · steps 0-0.8 · preprocessor canny`, and
    whether its map is attached."""
    unit = shown.unit
    kind = shown.control_type or "no longer installed"
    where = "map attached" if shown.map_path else "map not kept"
    return (
        f"ControlNet {shown.number}: {escape(unit.model)} ({kind}) · weight {unit.weight:g} · "
        f"steps {unit.start:g}-{unit.end:g} · preprocessor {unit.preprocessor} · {where}"
    )
