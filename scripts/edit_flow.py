"""Draw docs/img/edit-flow.png: what each edit button asks the model to paint.

Run `.venv/bin/python scripts/edit_flow.py` from the repository root. The canvases and masks
are the ones the bot builds (`pipeline.canvas`), from a small drawn landscape; the part the
model repaints is tinted. Only Pillow is needed, so the picture can be redrawn anywhere.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pipeline.canvas import Canvas, make_square, pan, region_mask, zoom_out

OUT = Path("docs/img/edit-flow.png")
PANEL = 180
"""Each canvas is drawn into a square of this many pixels."""
CAPTION = 36
GAP = 14
TINT = (236, 72, 153)
BUTTON_ROWS = (
    ("U", "V", "Reroll", "Edit", "Favourite"),
    ("Info", "Delete"),
    ("Vary (Region)", "Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"),
    ("Pan left", "Pan right", "Pan up", "Pan down", "Make Square"),
)


def landscape(width: int = 144, height: int = 96) -> Image.Image:
    """A sky, a sun, two hills and a house: enough shape to see where it went."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        draw.line((0, y, width, y), fill=(90 + y, 150 + y // 2, 230))
    draw.ellipse((width - 44, 10, width - 18, 36), fill=(255, 214, 90))
    draw.ellipse((-40, height // 2, width // 2 + 30, height * 2), fill=(80, 150, 80))
    draw.ellipse((width // 3, height * 2 // 3, width + 60, height * 2), fill=(60, 120, 60))
    draw.rectangle((24, 46, 52, 70), fill=(200, 120, 80))
    draw.polygon(((20, 46), (38, 30), (56, 46)), fill=(150, 50, 40))
    return image


def tinted(canvas: Canvas) -> Image.Image:
    """The canvas with its repainted part washed in the tint."""
    wash = Image.new("RGB", canvas.size, TINT)
    alpha = canvas.mask.point(lambda value: value * 6 // 10)
    return Image.composite(wash, canvas.image.convert("RGB"), alpha)


def panel(image: Image.Image, caption: str, font: ImageFont.ImageFont) -> Image.Image:
    scale = PANEL / max(image.size)
    shown = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST
    )
    out = Image.new("RGB", (PANEL, PANEL + CAPTION), "white")
    out.paste(shown, ((PANEL - shown.width) // 2, (PANEL - shown.height) // 2))
    ImageDraw.Draw(out).text((PANEL // 2, PANEL + 8), caption, fill="black", font=font, anchor="mt")
    return out


def buttons(font: ImageFont.ImageFont) -> Image.Image:
    """The rows under a one-image result, as Discord lays them out."""
    height = 30
    out = Image.new("RGB", (5 * (PANEL + GAP), len(BUTTON_ROWS) * (height + 6) + 8), "white")
    draw = ImageDraw.Draw(out)
    for row, labels in enumerate(BUTTON_ROWS):
        x, y = GAP, 4 + row * (height + 6)
        for label in labels:
            width = int(draw.textlength(label, font=font)) + 24
            fill = (253, 226, 240) if row >= 2 else (235, 236, 240)
            draw.rounded_rectangle((x, y, x + width, y + height), radius=6, fill=fill)
            draw.text((x + 12, y + height // 2), label, fill="black", font=font, anchor="lm")
            x += width + 8
    return out


def main() -> None:
    font = ImageFont.load_default(size=14)
    picture = landscape()
    panels = [
        panel(picture, "after U: one image", font),
        panel(tinted(zoom_out(picture, 2.0)), "Zoom Out 2x", font),
        panel(tinted(pan(picture, "right")), "Pan right", font),
        panel(tinted(make_square(picture)), "Make Square", font),
        panel(
            tinted(Canvas(picture, region_mask(*picture.size, ("top-left", "bottom-right")))),
            "Vary (Region): 2 cells",
            font,
        ),
    ]
    row = buttons(font)
    width = len(panels) * (PANEL + GAP) + GAP
    sheet = Image.new("RGB", (width, row.height + PANEL + CAPTION + GAP), "white")
    sheet.paste(row, (0, 0))
    for index, image in enumerate(panels):
        sheet.paste(image, (GAP + index * (PANEL + GAP), row.height + GAP // 2))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
