"""Draw docs/img/controlnet-canny.png: a picture, its canny map, and what the model makes of it.

Run `.venv/bin/python scripts/controlnet_flow.py` from the repository root. It takes the path a
user's command takes: a tiny ControlNet (random weights, built from the tiny model's config by
tests/control_files.py) is added with `dreamcord controlnet add`, then `dreamcord generate
--control ... --control-map-out` makes the map and two results of one seed, without and with
the unit, on the built-in `tiny` model, and their difference. Both models have random weights,
so the results are noise: the picture shows the flow and that the unit changes the result, not
a good image.
No network is needed; everything happens in a temporary DATA_DIR.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

from bot.cli import main as dreamcord

OUT = Path("docs/img/controlnet-canny.png")
SIZE = (192, 128)
"""The generation size: small, so the tiny model runs in seconds anywhere."""
PANEL = 192
CAPTION = 40
GAP = 14
AMPLIFY = 4
"""The difference panel's gain: the tiny ControlNet's change is small by eye."""
GENERATE = ("--model", "tiny", "--size", f"{SIZE[0]}x{SIZE[1]}", "--steps", "8", "--seed", "3")


def house(width: int = 240, height: int = 160) -> Image.Image:
    """A sky, a sun, a hill and a house: shapes with edges for canny to find."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line((0, y, width, y), fill=(90 + y // 2, 150 + y // 3, 230))
    draw.ellipse((width - 64, 14, width - 24, 54), fill=(255, 214, 90))
    draw.ellipse((-60, height * 2 // 3, width + 60, height * 2), fill=(80, 150, 80))
    draw.rectangle((70, 70, 150, 130), fill=(200, 120, 80))
    draw.polygon(((60, 72), (110, 32), (160, 72)), fill=(150, 50, 40))
    draw.rectangle((98, 98, 122, 130), fill=(90, 60, 40))
    return image


def run(*args: str) -> dict[str, object]:
    """`dreamcord ARGS` in this process; its JSON report when it prints one."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = dreamcord(list(args))
    if code:
        raise SystemExit(f"dreamcord {' '.join(args)} failed with {code}")
    text = out.getvalue().strip()
    return json.loads(text) if text.startswith("{") else {}


def panel(image: Image.Image, caption: str, font: ImageFont.ImageFont) -> Image.Image:
    scale = PANEL / max(image.size)
    shown = image.resize((round(image.width * scale), round(image.height * scale)))
    out = Image.new("RGB", (PANEL, PANEL * 2 // 3 + CAPTION), "white")
    out.paste(shown, ((PANEL - shown.width) // 2, 0))
    draw = ImageDraw.Draw(out)
    draw.multiline_text(
        (PANEL // 2, shown.height + 6),
        caption,
        fill="black",
        font=font,
        anchor="ma",
        align="center",
    )
    return out


def changed(plain: Image.Image, guided: Image.Image) -> Image.Image:
    """|guided - plain| per pixel, brightened so the change can be seen."""
    return ImageChops.difference(plain, guided).point(lambda value: min(255, value * AMPLIFY))


def main() -> None:
    from tests.control_files import tiny_controlnet, write_diffusers_layout

    with tempfile.TemporaryDirectory(prefix="dreamcord-flow-") as folder:
        work = Path(folder)
        os.environ.update({"DATA_DIR": str(work / "data"), "MODEL": "tiny"})
        picture = house()
        picture.save(work / "house.png")
        model = write_diffusers_layout(work / "tiny_canny.safetensors", tiny_controlnet(seed=1))
        run("controlnet", "add", str(model), "--name", "tiny-canny")
        plain = run("generate", "a house", *GENERATE, "--out", str(work), "--json")
        guided = run(
            "generate", "a house", *GENERATE, "--out", str(work), "--json",
            "--control", "tiny-canny", "--control-image", str(work / "house.png"),
            "--control-map-out", str(work / "map.png"),
        )  # fmt: skip
        results = [
            Image.open(str(report["images"][0]["path"])).convert("RGB")  # type: ignore[index]
            for report in (plain, guided)
        ]
        canny = Image.open(work / "map.png").convert("RGB")
    font = ImageFont.load_default(size=13)
    panels = [
        panel(picture, "control_image", font),
        panel(canny, "canny map (100/200)\nat the request's size", font),
        panel(results[0], "tiny model, no control\n(random weights: noise)", font),
        panel(results[1], "same seed, tiny ControlNet\n(random weights too)", font),
        panel(changed(*results), f"what the unit changed\n(difference x{AMPLIFY})", font),
    ]
    width = len(panels) * (PANEL + GAP) + GAP
    sheet = Image.new("RGB", (width, panels[0].height + GAP), "white")
    for index, image in enumerate(panels):
        sheet.paste(image, (GAP + index * (PANEL + GAP), GAP // 2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
