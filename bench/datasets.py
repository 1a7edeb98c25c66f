"""Realistic datasets built from material on this machine, for the model benchmark (never stored in git).

* icons: the Adwaita icon theme (Debian's adwaita-icon-theme), its PNG icons at 24 and 48 px; the
  label is the icon's category folder (the 9 largest but `legacy`, the theme's folder of deprecated
  icons of every kind, whose name says nothing about what an icon shows), the text its file name
  ("document-open-symbolic"). Both sizes of one icon share a `group`, so none sits in train and
  test at once.
* glyphs: characters of 9 Unicode blocks drawn with the DejaVu fonts (fonts-dejavu) in several
  styles, sizes and places; the text is the last word of the character's Unicode name ("alpha",
  "grave", "arrow", "horizontal"), which tells the block only sometimes.

* emoji: the emoji of Unicode's emoji-test.txt (Debian's unicode-data) drawn with Noto Color Emoji
  (fonts-noto-color-emoji); the label is the emoji's group ("Animals & Nature", "Objects", 9 of them),
  the text its name ("grinning face", "flag: Chile"). Skin-tone variants are left out (they would put one
  picture in many rows).
* tango: the Tango icon theme (tango-icon-theme) at 22 and 32 px, every category; three names in four
  are links to another icon (`gnome-fs-directory` -> `folder`), so one image carries several texts,
  and `animations` is a class of two icons.

* oxygen (held out: built only after the default was frozen, never tuned on): the Oxygen icon theme
  (oxygen-icon-theme) at 32 px as a `LABEL/FILE` folder tree, each icon's name in a sidecar `.txt`
  (`folder-documents` -> "folder documents"); the 7 largest categories.

All are the kind the pipeline is for: small images, short names as text carrying part of the
signal, 9-10 classes, a thousand-odd rows, skewed class sizes.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections import Counter
from pathlib import Path

ICON_THEME = Path("/usr/share/icons/Adwaita")
OXYGEN_THEME = Path("/usr/share/icons/oxygen/base")
TANGO_THEME = Path("/usr/share/icons/Tango")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SKIN_TONES = {chr(code) for code in range(0x1F3FB, 0x1F400)}
NOT_A_CATEGORY = {"legacy"}
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
GLYPH_BLOCKS = {
    "latin": [*range(0x41, 0x5B), *range(0x61, 0x7B), *range(0xC0, 0x100)],
    "greek": [*range(0x391, 0x3AA), *range(0x3B1, 0x3CA)],
    "cyrillic": range(0x410, 0x450),
    "arrows": range(0x2190, 0x21FF),
    "math": range(0x2200, 0x22FF),
    "box": range(0x2500, 0x257F),
    "shapes": range(0x25A0, 0x25FF),
    "currency": [0x24, 0xA2, 0xA3, 0xA5, *range(0x20A0, 0x20C0)],
    "digits": [*range(0x30, 0x3A), *range(0x2070, 0x2080), *range(0x2080, 0x208A), *range(0x2460, 0x2474)],
}


def write_icons(folder: Path, classes: int = 9) -> Path:
    """The icon dataset as a CSV manifest with a `group` column; returns the manifest."""
    rows = []
    for png in sorted(ICON_THEME.glob("*/*/*.png")):
        size, category = png.parts[-3], png.parts[-2]
        if size not in ("24x24", "48x48") or category in NOT_A_CATEGORY:
            continue
        rows.append({"text": png.stem, "image": str(png.relative_to(ICON_THEME)), "label": category,
                     "group": f"{category}/{png.stem}"})
    keep = {name for name, _ in Counter(row["label"] for row in rows).most_common(classes)}
    rows = [row for row in rows if row["label"] in keep]
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:  # a manifest's images live under its folder
        target = folder / row["image"]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((ICON_THEME / row["image"]).read_bytes())
    return _write_csv(folder / "manifest.csv", rows, ["text", "image", "label", "group"])


def write_tango(folder: Path) -> Path:
    """The Tango icons (22 and 32 px, links included: a link is another name for the same picture)."""
    rows = []
    for png in sorted(TANGO_THEME.glob("*/*/*.png")):
        size, category = png.parts[-3], png.parts[-2]
        if size not in ("22x22", "32x32"):
            continue
        rows.append({"text": png.stem, "image": str(png.relative_to(TANGO_THEME)), "label": category,
                     "group": f"{category}/{png.stem}"})
    for row in rows:
        target = folder / row["image"]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((TANGO_THEME / row["image"]).read_bytes())
    return _write_csv(folder / "manifest.csv", rows, ["text", "image", "label", "group"])


def write_oxygen(folder: Path, classes: int = 7) -> Path:
    """The Oxygen icons (32 px) as a LABEL/FILE tree with sidecar captions; returns the tree's root."""
    icons = [png for png in sorted(OXYGEN_THEME.glob("32x32/*/*.png"))]
    keep = {name for name, _ in Counter(png.parent.name for png in icons).most_common(classes)}
    root = folder / "tree"
    for png in icons:
        if png.parent.name not in keep:
            continue
        target = root / png.parent.name / png.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png.read_bytes())
        target.with_suffix(".txt").write_text(png.stem.replace("-", " "), encoding="utf-8")
    return root


def write_emoji(folder: Path, side: int = 72) -> Path:
    """The emoji (one row each, skin tones left out) drawn at `side` px, labelled with their group."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # the one size this bitmap font has
    rows, group = [], None
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        if "; fully-qualified" not in line or group == "Component":
            continue
        codes, rest = line.split(";", 1)
        emoji = "".join(chr(int(code, 16)) for code in codes.split())
        if SKIN_TONES & set(emoji):
            continue
        name = rest.split("#", 1)[1].split(maxsplit=2)[2]  # "# 😀 E1.0 grinning face"
        canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((8, 8), emoji, font=font, embedded_color=True)
        box = canvas.getbbox()
        if box is None:
            continue  # the font has no picture for it
        path = f"images/{'-'.join(codes.split()).lower()}.png"
        canvas.crop(box).resize((side, side), Image.LANCZOS).save(folder / path)
        rows.append({"text": name, "image": path, "label": group})
    return _write_csv(folder / "manifest.csv", rows, ["text", "image", "label"])


def write_glyphs(folder: Path, per_char: int = 1, seed: int = 0) -> Path:
    """The glyph dataset: `per_char` renderings of each character a DejaVu font has."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    fonts = sorted(FONT_DIR.glob("DejaVu*.ttf"))
    rows = []
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for label, codes in GLYPH_BLOCKS.items():
        for code in codes:
            char = chr(code)
            name = unicodedata.name(char, "")
            if not name:
                continue
            for copy in range(per_char):
                font_path = rng.choice(fonts)
                font = ImageFont.truetype(str(font_path), rng.randint(18, 30))
                side = rng.choice([32, 40, 48])
                ink, paper = rng.randint(0, 90), rng.randint(170, 255)
                image = Image.new("L", (side, side), paper)
                draw = ImageDraw.Draw(image)
                left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
                if right <= left or bottom <= top:
                    continue  # the font has no glyph for it
                x = (side - (right - left)) / 2 - left + rng.randint(-3, 3)
                y = (side - (bottom - top)) / 2 - top + rng.randint(-3, 3)
                draw.text((x, y), char, fill=ink, font=font)
                path = f"images/{code:05x}-{copy}.png"
                image.save(folder / path)
                rows.append({"text": name.split()[-1].lower(), "image": path, "label": label,
                             "group": f"{code:05x}"})
    return _write_csv(folder / "manifest.csv", rows, ["text", "image", "label", "group"])


def write_demo_set(folder: Path) -> Path:
    """The sample exactly as `mmpipe demo` writes it (its mmpipe.toml included)."""
    from mmpipe.sample import DEMO, write_sample

    return write_sample(folder, DEMO)


def write_sample_set(folder: Path, rows: int) -> Path:
    from mmpipe.sample import SampleSpec, write_sample

    return write_sample(folder, SampleSpec(rows=rows, seed=0))


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
