"""Label checks: present, and one of the configured classes when classes are configured."""

from __future__ import annotations

from collections.abc import Collection

from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.reasons import Reason


def clean_label(label: str | None, classes: Collection[str] | None = None) -> str | Rejection:
    """Strip surrounding whitespace; reject an empty label or one outside `classes`."""
    label = (label or "").strip()
    if not label:
        return Rejection(Reason.LABEL_MISSING, "the label is empty")
    if classes is not None and label not in classes:
        shown = ", ".join(sorted(classes)[:10])
        return Rejection(Reason.LABEL_UNKNOWN, f"label {label!r} is not one of the configured classes ({shown})")
    return label
