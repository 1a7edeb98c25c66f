"""Cleaning and standardizing: pure functions, one raw value in, a clean value or a Rejection out."""

from __future__ import annotations

from dataclasses import dataclass

from mmpipe.ingest.reasons import Reason


@dataclass(frozen=True)
class Rejection:
    """Why a row is not accepted: a reason code from the fixed vocabulary and a human sentence."""

    reason: Reason
    detail: str
