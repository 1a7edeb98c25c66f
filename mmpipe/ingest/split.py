"""Deterministic splits: a pure function of a stable key, so new data never moves old rows."""

from __future__ import annotations

import hashlib

from mmpipe.config import SPLITS, SplitRatios


def assign_split(key: str, ratios: SplitRatios) -> str:
    """Map `key` (the row's group, else its image's sha256) to train/val/test with the given ratios."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for split in SPLITS:
        cumulative += getattr(ratios, split)
        if position < cumulative:
            return split
    # Ratios add up to 1 only within float precision: the tail belongs to the last non-empty split.
    return next(split for split in reversed(SPLITS) if getattr(ratios, split) > 0)
