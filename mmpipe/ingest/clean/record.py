"""One raw row in, one processed row out: accepted (cleaned columns filled) or rejected (reason set).

Checks run cheapest first, so a row is rejected for the first problem found and an image is only
decoded when everything else about the row is fine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmpipe.config import SPLITS, Config, ImageConfig
from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.clean.image import decode_image, read_image_file, resolve_image_path
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

    def windows(self, rows: list[dict[str, Any]], config: ImageConfig) -> Iterator[tuple[list, LocalImages]]:
        """The rows, with what reads their images (one window: files are read as each row needs them)."""
        yield rows, LocalImages(self, config)


@dataclass(frozen=True)
class LocalImages:
    """Reads a row's image file when asked (see mmpipe.ingest.bucket.BucketImages for objects)."""

    location: SourceLocation
    config: ImageConfig

    def read(self, reference: str | None) -> bytes | Rejection:
        path = resolve_image_path(reference, self.location.base_dir, self.location.root)
        return path if isinstance(path, Rejection) else read_image_file(path, self.config)


class ImageReader(Protocol):
    def read(self, reference: str | None) -> bytes | Rejection: ...


def clean_record(raw: dict[str, Any], images: ImageReader, config: Config, labelled: bool = True) -> dict[str, Any]:
    """Judge one RAW-schema row, reading its image from `images`; return a CHUNK-schema row (without
    `row`/`source`). `labelled=False` (data to score): a row without a label is judged on the rest, its
    label None, and a label or split is kept as given, never a reason to quarantine the row."""
    out: dict[str, Any] = {f"raw_{name}": raw[name]
                           for name in ("id", "text", "image", "label", "split", "group", "extra")}
    verdict = _judge(raw, images, config, labelled)
    if isinstance(verdict, Rejection):
        # Quarantined rows get an id too, so reports and contracts can name them.
        raw_key = hashlib.sha256(f"{raw['text']}\0{raw['image']}\0{raw['label']}".encode()).hexdigest()
        row_id = (raw["id"] or "").strip() or raw_key[:DERIVED_ID_CHARS]
        out.update(id=row_id, reason=verdict.reason.value, detail=verdict.detail)
    else:
        out.update(verdict, reason=None, detail=None)
    return out


def _judge(raw: dict[str, Any], images: ImageReader, config: Config, labelled: bool) -> dict[str, Any] | Rejection:
    if raw["reason"] is not None:
        return Rejection(Reason(raw["reason"]), raw["detail"])
    label = clean_label(raw["label"], config.ingest.classes) if labelled else ((raw["label"] or "").strip() or None)
    if isinstance(label, Rejection):
        return label
    given_split = (raw["split"] or "").strip().lower() or None
    if given_split is not None and given_split not in SPLITS and labelled:
        return Rejection(Reason.SPLIT_INVALID, f"split {raw['split']!r} is not one of {', '.join(SPLITS)}")
    text, truncated = clean_text(raw["text"] or "", lowercase=config.text.lowercase, max_chars=config.text.max_chars)
    if not text and not config.text.allow_empty:
        detail = "the text is empty after cleaning" if raw["text"] else "the row has no text"
        return Rejection(Reason.TEXT_EMPTY, detail)
    data = images.read(raw["image"])
    if isinstance(data, Rejection):
        return data
    image = decode_image(data, config.image)
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
