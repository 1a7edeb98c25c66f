"""One raw row in, one processed row out: accepted (cleaned columns filled) or rejected (reason set).

Checks run cheapest first, so a row is rejected for the first problem found and an image is only
decoded when everything else about the row is fine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmpipe.config import SPLITS, Config
from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.clean.image import resolve_image_path, standardize_image
from mmpipe.ingest.clean.label import clean_label
from mmpipe.ingest.clean.text import clean_text
from mmpipe.ingest.reasons import Reason
from mmpipe.ingest.split import assign_split

DERIVED_ID_CHARS = 20


@dataclass(frozen=True)
class SourceLocation:
    """Where image references are resolved: relative to `base_dir`, never outside `root`."""

    base_dir: Path
    root: Path


def clean_record(raw: dict[str, Any], location: SourceLocation, config: Config) -> dict[str, Any]:
    """Judge one RAW-schema row; return a CHUNK-schema row (without `row`/`source`)."""
    out: dict[str, Any] = {f"raw_{name}": raw[name]
                           for name in ("id", "text", "image", "label", "split", "group", "extra")}
    verdict = _judge(raw, location, config)
    if isinstance(verdict, Rejection):
        # Quarantined rows get an id too, so reports and contracts can name them.
        raw_key = hashlib.sha256(f"{raw['text']}\0{raw['image']}\0{raw['label']}".encode()).hexdigest()
        row_id = (raw["id"] or "").strip() or raw_key[:DERIVED_ID_CHARS]
        out.update(id=row_id, reason=verdict.reason.value, detail=verdict.detail)
    else:
        out.update(verdict, reason=None, detail=None)
    return out


def _judge(raw: dict[str, Any], location: SourceLocation, config: Config) -> dict[str, Any] | Rejection:
    if raw["reason"] is not None:
        return Rejection(Reason(raw["reason"]), raw["detail"])
    label = clean_label(raw["label"], config.ingest.classes)
    if isinstance(label, Rejection):
        return label
    given_split = (raw["split"] or "").strip().lower() or None
    if given_split is not None and given_split not in SPLITS:
        return Rejection(Reason.SPLIT_INVALID, f"split {raw['split']!r} is not one of {', '.join(SPLITS)}")
    text, truncated = clean_text(raw["text"] or "", lowercase=config.text.lowercase, max_chars=config.text.max_chars)
    if not text and not config.text.allow_empty:
        detail = "the text is empty after cleaning" if raw["text"] else "the row has no text"
        return Rejection(Reason.TEXT_EMPTY, detail)
    path = resolve_image_path(raw["image"], location.base_dir, location.root)
    if isinstance(path, Rejection):
        return path
    image = standardize_image(path, config.image)
    if isinstance(image, Rejection):
        return image
    content_key = hashlib.sha256(f"{text}\0{image.sha256}".encode()).hexdigest()
    row_id = (raw["id"] or "").strip() or content_key[:DERIVED_ID_CHARS]
    group = (raw["group"] or "").strip() or None
    return {
        "id": row_id,
        "text": text,
        "image": image.pixels,
        "image_sha256": image.sha256,
        "orig_width": image.width,
        "orig_height": image.height,
        "orig_format": image.format,
        "image_brightness": image.brightness,
        "image_colourfulness": image.colourfulness,
        "label": label,
        # Grouped by image content by default: one image with several captions is ordinary, and
        # none of its rows may sit in train while another sits in test.
        "split": given_split or assign_split(group or image.sha256, config.ingest.split_ratios),
        "group": group,
        "text_truncated": truncated,
        "extra": raw["extra"],
        "content_key": content_key,
    }
