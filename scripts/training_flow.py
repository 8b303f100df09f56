"""Draw docs/img/training-flow.png: the pictures a LoRA learns from, its loss, and what it changes.

Run `.venv/bin/python scripts/training_flow.py` from the repository root. It takes the trainer's
own path (`open_dataset`, `plan_training`, `Trainer`) on the built-in `tiny` model on the CPU,
draws the loss with the chart the Discord status message shows, and samples one seed at LoRA
weight 0 and 1. The model has random weights, so the samples are noise: the picture shows the
flow and that the trained LoRA changes the result (the last panel), not a good image. It takes
about a minute.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageChops, ImageDraw, ImageFont

from cogs.charts import loss_chart
from pipeline.tiny import build_tiny_components
from pipeline.training.dataset import open_dataset
from pipeline.training.plan import TrainingOptions, plan_training
from pipeline.training.trainer import Trainer, TrainingComponents

OUT = Path("docs/img/training-flow.png")
PANEL = 160
CAPTION = 36
STEPS = 40
PROMPT = "sksfox, snow"


def pictures(folder: Path, count: int = 6) -> list[Path]:
    """Warm and cold striped pictures with kohya-style captions, as a user's zip would hold."""
    paths = []
    for index in range(count):
        image = Image.new("RGB", (256, 256), (230, 230, 240) if index % 2 else (90, 140, 70))
        draw = ImageDraw.Draw(image)
        for stripe in range(0, 256, 32):
            draw.rectangle((stripe + index * 4, 0, stripe + 14 + index * 4, 255), (200, 110, 40))
        path = folder / "2_fox" / f"{index:02}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        path.with_suffix(".txt").write_text(f"sksfox, {'snow' if index % 2 else 'grass'}")
        paths.append(path)
    return paths


def train(folder: Path) -> tuple[list[float], list[Image.Image]]:
    dataset = open_dataset(folder, folder / "unused")
    options = TrainingOptions.for_preset(
        "sksfox", steps=STEPS, resolution=256, rank=4, alpha=2, lr=3e-3, te_lr=1e-3
    )
    parts = build_tiny_components()
    components = TrainingComponents(
        parts["unet"],
        parts["text_encoder"],
        parts["tokenizer"],
        parts["vae"],
        dict(parts["scheduler"].config),
        "tiny",
    )
    trainer = Trainer.start(
        components, plan_training(dataset, options), folder / "run", "cpu", torch.float32
    )
    losses = []
    while not trainer.finished:
        losses.append(trainer.step().loss)
    samples = [trainer.sample([PROMPT], [7], weight=weight)[0] for weight in (0.0, 1.0)]
    trainer.close()
    return losses, samples


def panel(image: Image.Image, caption: str, width: int = PANEL) -> Image.Image:
    out = Image.new("RGB", (width, PANEL + CAPTION), (32, 34, 37))
    image = image.convert("RGB")
    image.thumbnail((width, PANEL))
    out.paste(image, ((width - image.width) // 2, (PANEL - image.height) // 2))
    ImageDraw.Draw(out).text((6, PANEL + 8), caption, (220, 221, 222), ImageFont.load_default())
    return out


def amplified_difference(first: Image.Image, second: Image.Image) -> Image.Image:
    """What the LoRA changed, brightened: with random weights both samples look alike."""
    difference = ImageChops.difference(first.convert("RGB"), second.convert("RGB"))
    return difference.point(lambda value: min(255, value * 8))


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        shown = [Image.open(path).copy() for path in pictures(Path(folder))[:2]]
        losses, (before, after) = train(Path(folder))
    chart = Image.open(io.BytesIO(loss_chart(losses)))
    panels = [
        panel(shown[0], "training picture"),
        panel(shown[1], "training picture"),
        panel(chart, f"loss over {STEPS} steps", width=PANEL * 2),
        panel(before, "seed 7, LoRA weight 0"),
        panel(after, "seed 7, LoRA weight 1"),
        panel(amplified_difference(before, after), "difference x8"),
    ]
    sheet = Image.new("RGB", (sum(p.width for p in panels), PANEL + CAPTION), (32, 34, 37))
    x = 0
    for part in panels:
        sheet.paste(part, (x, 0))
        x += part.width
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
