"""A realistic synthetic raw dataset, so users and tests have data with no download.

Each row's image shows a circle or a square; its text places the scene by day or by night. The
label needs both: sun (circle, day), moon (circle, night), window (square, day), lantern (square,
night). Files come in mixed formats, sizes and modes, and a few percent of rows carry the faults
ingest must catch.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = {("circle", "day"): "sun", ("circle", "night"): "moon", ("square", "day"): "window",
           ("square", "night"): "lantern"}
DAY_WORDS = ["at noon", "in the morning sun", "on a bright afternoon", "at sunrise", "under a clear day sky"]
NIGHT_WORDS = ["at midnight", "late in the evening", "under the stars", "after dusk", "on a dark night"]
SUBJECTS = ["A photo", "A quick sketch", "A snapshot", "An illustration", "A picture"]
FILLERS = ["seen from the street", "near the old harbour", "with soft colours", "taken by a visitor",
           "over the rooftops", "in a quiet village", "from a small window", "with a wide lens"]
# (format, Pillow mode, extension); cycled so every kind appears in any sample of a few dozen rows.
KINDS = [("JPEG", "RGB", "jpg"), ("PNG", "RGB", "png"), ("WEBP", "RGB", "webp"), ("JPEG", "L", "jpg"),
         ("PNG", "RGBA", "png"), ("GIF", "P", "gif"), ("BMP", "RGB", "bmp"), ("TIFF", "RGB", "tif"),
         ("JPEG", "CMYK", "jpg"), ("PNG", "I;16", "png"), ("PNG", "LA", "png"), ("JPEG", "EXIF", "jpg")]
FAULTS = ["image_missing", "image_truncated", "image_empty", "html_as_png", "text_empty", "label_missing",
          "label_unknown", "path_outside_root", "duplicate", "label_conflict"]


@dataclass(frozen=True)
class SampleSpec:
    """How big and how messy the sample is."""

    rows: int = 500
    seed: int = 0
    min_side: int = 24
    max_side: int = 160
    fault_rate: float = 0.05
    kinds: tuple[tuple[str, str, str], ...] = tuple(KINDS)
    image_size: int | None = None  # written to mmpipe.toml as `[image] size` when set


# `mmpipe demo`'s sample: shapes never squeezed to a few pixels by an extreme aspect ratio (the default
# 24-160 px sides are for exercising ingest), stored at 32 px, so the default model solves it in about a
# minute on 2 cores (README, Quick start, says what a fresh clone measured).
DEMO = SampleSpec(rows=1000, seed=0, min_side=48, max_side=128, image_size=32)


def write_sample(folder: Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write `folder`/manifest.csv, `folder`/images/* and `folder`/mmpipe.toml; return the manifest path."""
    rng = random.Random(spec.seed)
    pixels = np.random.default_rng(spec.seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for index in range(spec.rows):
        shape, time_of_day = rng.choice(["circle", "square"]), rng.choice(["day", "night"])
        file_format, mode, extension = spec.kinds[index % len(spec.kinds)]
        name = f"images/{index:05d}.{extension}"
        side = (rng.randint(spec.min_side, spec.max_side), rng.randint(spec.min_side, spec.max_side))
        data = encode_image(draw_scene(shape, time_of_day, side, rng, pixels), file_format, mode)
        (folder / name).write_bytes(data)
        rows.append({"text": describe(time_of_day, rng), "image": name, "label": CLASSES[(shape, time_of_day)]})
    rows = _inject_faults(folder, rows, spec, rng)
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    classes = ", ".join(f'"{name}"' for name in sorted(CLASSES.values()))
    image = f"\n[image]\nsize = {spec.image_size}\n" if spec.image_size else ""
    (folder / "mmpipe.toml").write_text(f"# Written by `mmpipe sample`.\n[ingest]\nclasses = [{classes}]\n{image}")
    return manifest


def describe(time_of_day: str, rng: random.Random) -> str:
    """A caption that says day or night among filler, with the mess real captions have."""
    words = DAY_WORDS if time_of_day == "day" else NIGHT_WORDS
    text = f"{rng.choice(SUBJECTS)} {rng.choice(words)}, {rng.choice(FILLERS)}."
    mess = rng.random()
    if mess < 0.1:
        text = f"<p>{text}</p>"
    elif mess < 0.2:
        text = "  " + text.replace(" ", "\u200b ", 1) + "\n"
    elif mess < 0.25:
        text = text.upper()
    return text


def draw_scene(shape: str, time_of_day: str, side: tuple[int, int], rng: random.Random,
               pixels: np.random.Generator) -> Image.Image:
    """A shape on a noisy background whose brightness does not give the time of day away."""
    width, height = side
    base = np.array([rng.randint(40, 215) for _ in range(3)], dtype=np.float64)
    noise = pixels.normal(0, 12, size=(height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    extent = int(min(width, height) * rng.uniform(0.45, 0.8))
    left, top = rng.randint(0, width - extent), rng.randint(0, height - extent)
    colour = tuple(int(255 - channel) for channel in base)
    draw = ImageDraw.Draw(image)
    box = (left, top, left + extent, top + extent)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return image


def encode_image(image: Image.Image, file_format: str, mode: str) -> bytes:
    """Encode in the given format and mode (EXIF: a JPEG stored sideways with an orientation tag)."""
    buffer = io.BytesIO()
    if mode == "EXIF":
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 CW to display": stored image is the display image turned CCW
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=90, exif=exif)
    elif mode == "I;16":
        wide = (np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        Image.fromarray(wide).save(buffer, "PNG")
    elif mode == "RGBA":
        alpha = Image.new("L", image.size, 255)
        ImageDraw.Draw(alpha).rectangle((0, 0, image.width // 4, image.height), fill=0)
        rgba = image.convert("RGBA")
        rgba.putalpha(alpha)
        rgba.save(buffer, "PNG")
    elif file_format == "GIF":
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, "GIF")
    elif file_format == "JPEG":
        image.convert(mode).save(buffer, "JPEG", quality=90)
    else:
        image.convert(mode).save(buffer, file_format)
    return buffer.getvalue()


def _inject_faults(folder: Path, rows: list[dict[str, str]], spec: SampleSpec, rng: random.Random):
    """Damage about `fault_rate` of the rows, cycling through every fault kind."""
    count = int(len(rows) * spec.fault_rate)
    if count == 0:
        return rows
    targets = sorted(rng.sample(range(len(rows)), count))
    extra: list[dict[str, str]] = []
    for number, index in enumerate(targets):
        fault, row = FAULTS[number % len(FAULTS)], rows[index]
        image_path = folder / row["image"]
        if fault == "image_missing":
            row["image"] = row["image"].rsplit(".", 1)[0] + "-missing.jpg"
        elif fault == "image_truncated":
            data = image_path.read_bytes()
            image_path.write_bytes(data[: len(data) // 3])
        elif fault == "image_empty":
            image_path.write_bytes(b"")
        elif fault == "html_as_png":
            row["image"] = row["image"].rsplit(".", 1)[0] + "-page.png"
            (folder / row["image"]).write_text("<!doctype html><html><body>Not found</body></html>")
        elif fault == "text_empty":
            row["text"] = "<div> </div>"
        elif fault == "label_missing":
            row["label"] = " "
        elif fault == "label_unknown":
            row["label"] = row["label"] + "s"
        elif fault == "path_outside_root":
            row["image"] = "../outside.jpg"
        elif fault == "duplicate":
            extra.append(dict(row))
        elif fault == "label_conflict":
            other = sorted(set(CLASSES.values()) - {row["label"]})[0]
            extra.append({**row, "label": other})
    return rows + extra
