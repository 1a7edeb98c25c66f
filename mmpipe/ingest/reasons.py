"""The fixed vocabulary of rejection reasons: every quarantined row carries exactly one.

Checks run in the order of this enum's definition for a row, so a row with a missing label and a
missing image is quarantined as `label_missing` (the cheap check comes first, the image is not read).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    ROW_MALFORMED = "row_malformed"
    TEXT_INVALID = "text_invalid"
    LABEL_MISSING = "label_missing"
    LABEL_UNKNOWN = "label_unknown"
    SPLIT_INVALID = "split_invalid"
    TEXT_EMPTY = "text_empty"
    PATH_OUTSIDE_ROOT = "path_outside_root"
    IMAGE_MISSING = "image_missing"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_UNREADABLE = "image_unreadable"
    LABEL_CONFLICT = "label_conflict"
    ID_CONFLICT = "id_conflict"


# One sentence each; README.md's reason table is checked against this by a test.
REASON_MEANINGS: dict[Reason, str] = {
    Reason.ROW_MALFORMED: "the manifest row could not be parsed (bad JSON line, non-object row, wrong field count)",
    Reason.TEXT_INVALID: "the text is not valid Unicode (undecodable bytes or lone surrogates)",
    Reason.LABEL_MISSING: "the label is empty after stripping whitespace",
    Reason.LABEL_UNKNOWN: "the label is not in `ingest.classes`, or holds a control character (a NUL, a line break)",
    Reason.SPLIT_INVALID: "the manifest's `split` is set but is not train, val or test",
    Reason.TEXT_EMPTY: "the text is empty after cleaning (and `text.allow_empty` is false)",
    Reason.PATH_OUTSIDE_ROOT: "the image path escapes the source root (`..`, absolute path or symlink)",
    Reason.IMAGE_MISSING: "the image path is empty or no file exists there",
    Reason.IMAGE_TOO_LARGE: "the file exceeds `image.max_file_bytes` or its pixels exceed `image.max_pixels`",
    Reason.IMAGE_UNREADABLE: "the file is empty, truncated, not an image, or in an unsupported format",
    Reason.LABEL_CONFLICT: "the same text and image appear with different labels (all such rows)",
    Reason.ID_CONFLICT: "the id was already used by an accepted row with other content",
}
