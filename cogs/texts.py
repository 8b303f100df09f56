"""What Dreamcord's messages say: pure text builders, so they are easy to test and to change."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.request import GenerationRequest, Mode

PROMPT_SHOWN = 1200
"""Characters of the prompt shown in a message; Discord allows 2,000 in all."""

OPERATION_NAMES = {
    Mode.TXT2IMG: "",
    Mode.IMG2IMG: "Image to image",
    Mode.UPSCALE: "Upscale",
    Mode.VARIATION: "Variations",
    Mode.REROLL: "Reroll",
}


def escape(text: str) -> str:
    """User text made inert: no markdown, no mentions, no masked links."""
    for mark in ("\\", "*", "_", "~", "`", "|", ">", "[", "]", "(", ")", "#", "-", "@", "<"):
        text = text.replace(mark, "\\" + mark)
    return text


def shown_prompt(request: GenerationRequest) -> str:
    prompt = request.prompt.strip() or "(empty prompt)"
    if len(prompt) > PROMPT_SHOWN:
        prompt = prompt[: PROMPT_SHOWN - 1] + "…"
    return f"**{escape(prompt)}**"


def headline(request: GenerationRequest, user_id: int) -> str:
    """`**prompt** - <@user> (Upscale)`: the first line of every job message."""
    operation = OPERATION_NAMES.get(request.mode, "")
    suffix = f" ({operation})" if operation else ""
    return f"{shown_prompt(request)} - <@{user_id}>{suffix}"


RECIPE_NOTES_SHOWN = 1800
"""Characters of recipe notes in one reply; Discord allows 2,000."""


def recipe_notes(notes: Sequence[str]) -> str:
    """What a pasted recipe asked for that this job does differently, one line each."""
    lines = ["ℹ️ From the pasted parameters:"]
    for count, note in enumerate(notes):
        line = f"- {escape(note)}"
        if sum(map(len, lines)) + len(line) > RECIPE_NOTES_SHOWN:
            lines.append(f"- and {len(notes) - count} more")
            break
        lines.append(line)
    return "\n".join(lines)


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
    return f"{headline(request, user_id)}\n🎨 {bar} step {step}/{total}"


def finished(request: GenerationRequest, user_id: int, seeds: Sequence[int]) -> str:
    seed_text = str(seeds[0]) if len(set(seeds)) == 1 else f"{seeds[0]}-{seeds[-1]}"
    details = f"{request.width}x{request.height}, {request.sampler}, {request.steps} steps"
    return f"{headline(request, user_id)}\nseed {seed_text} · {details}"


def failed(request: GenerationRequest, user_id: int, message: str) -> str:
    if message == "cancelled":
        return f"{headline(request, user_id)}\n🚫 Cancelled"
    return f"{headline(request, user_id)}\n❌ {message}"
