"""Text normalization: NFKC, no markup, no invisible characters, single spaces, a length cap."""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

# Tags, comments, doctypes and processing instructions. A tag must start with a letter so that
# "a < b > c" is kept; tags become a space so "<p>a</p><p>b</p>" reads "a b".
MARKUP = re.compile(r"<!--.*?-->|<[!?/]?[A-Za-z][^<>]*>", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
# Every pass either changes nothing or shortens/normalizes the text; real text settles in 1-2.
MAX_PASSES = 8
# Raw text beyond this many times the cap is never looked at: markup can shrink text, but
# cleaning megabytes of it (the tag regex is superlinear on unclosed comments) would stall a run.
RAW_FACTOR = 4


class CleanText(NamedTuple):
    text: str
    truncated: bool


def clean_text(text: str, *, lowercase: bool = False, max_chars: int = 1000) -> CleanText:
    """Normalize `text`; idempotent: cleaning clean text changes nothing.

    NFKC; drop control, format (zero-width, bidi) and surrogate characters; strip HTML tags;
    collapse whitespace; optionally lowercase; cut to `max_chars` (reported as `truncated`).
    """
    raw_limit = RAW_FACTOR * max_chars + 64
    cut_raw = len(text) > raw_limit
    cleaned = _settle(text[:raw_limit] if cut_raw else text, lowercase)
    if len(cleaned) <= max_chars and not cut_raw:
        return CleanText(cleaned, False)
    if len(cleaned) <= max_chars:
        return CleanText(cleaned, True)
    return CleanText(_settle(cleaned[:max_chars], lowercase), True)


def _settle(text: str, lowercase: bool) -> str:
    """Repeat the normalizing pass until nothing changes (one step can enable another)."""
    for _ in range(MAX_PASSES):
        cleaned = _normalize_once(text, lowercase)
        if cleaned == text:
            break
        text = cleaned
    return text


def _normalize_once(text: str, lowercase: bool) -> str:
    text = unicodedata.normalize("NFKC", text)
    if not text.isprintable():
        text = "".join(char for char in text if _keep(char))
    text = MARKUP.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return text.lower() if lowercase else text


def _keep(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "Cc":
        return char.isspace()  # tabs and newlines become spaces later; NUL, BEL, ESC go
    return category not in ("Cf", "Cs")  # zero-width and bidi controls; lone surrogates
