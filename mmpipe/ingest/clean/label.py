"""Label checks: present, a name (no control characters), and one of the configured classes when configured."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection

from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.reasons import Reason


def clean_label(label: str | None, classes: Collection[str] | None = None) -> str | Rejection:
    """Strip surrounding whitespace; reject an empty label, one with a control character, or one outside `classes`."""
    label = (label or "").strip()
    if not label:
        return Rejection(Reason.LABEL_MISSING, "the label is empty")
    control = next((char for char in label if unicodedata.category(char) == "Cc"), None)
    if control is not None:  # a NUL or a line break inside a name: a broken field, not a class of its own
        return Rejection(Reason.LABEL_UNKNOWN, f"label {label!r} holds a control character (U+{ord(control):04X})")
    if classes is not None and label not in classes:
        shown = ", ".join(sorted(classes)[:10])
        return Rejection(Reason.LABEL_UNKNOWN, f"label {label!r} is not one of the configured classes ({shown})")
    return label
