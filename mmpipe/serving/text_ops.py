"""Ingest's text cleaning (mmpipe.ingest.clean.text, the reference) as TensorFlow ops.

Core TensorFlow has no Unicode normalization, so NFKC is rebuilt from Python's own tables at
export time: a per-code-point NFKC map plus the canonical composition pairs (Hangul included),
applied pass by pass inside the same settle loop as `clean_text`. The dropped-character and
whitespace classes are generated from Python too, so `\\s` / `str.isspace` semantics match.
Left out: canonical *reordering* of several combining marks, which only matters for marks typed
out of canonical order. Invalid UTF-8 becomes U+FFFD (ingest quarantines such rows).
"""

from __future__ import annotations

import functools
import unicodedata

import tensorflow as tf

from mmpipe.config import TextConfig
from mmpipe.ingest.clean.text import MARKUP, MAX_PASSES, RAW_FACTOR

_UNICODE_END = 0x110000


class TextOps(tf.Module):
    """`clean_text` on a batch of raw strings; its lookup tables are tracked, so they export with the model."""

    def __init__(self, config: TextConfig):
        super().__init__(name="mmpipe_text_ops")
        self.config = config
        nfkc, pairs = _nfkc_tables()
        self.nfkc_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(nfkc), tf.int64), tf.constant(list(nfkc.values()))),
            default_value="")
        self.compose_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(pairs), tf.int64),
                                                tf.constant(list(pairs.values()), tf.int64)),
            default_value=-1)
        self.drop_pattern = "[" + _char_class(_dropped_code_points()) + "]"
        self.space_pattern = "[" + _char_class(_space_code_points()) + "]+"

    def __call__(self, texts):
        """mmpipe.ingest.clean.text.clean_text on a batch of raw strings."""
        max_chars = self.config.max_chars
        texts = tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace")
        texts = tf.strings.substr(texts, 0, RAW_FACTOR * max_chars + 64, unit="UTF8_CHAR")
        cleaned = self._settle(texts)
        too_long = tf.strings.length(cleaned, unit="UTF8_CHAR") > max_chars
        recut = self._settle(tf.strings.substr(cleaned, 0, max_chars, unit="UTF8_CHAR"))
        return tf.where(too_long, recut, cleaned)

    def _settle(self, texts):
        def step(i, current, _changed):
            cleaned = self._normalize_once(current)
            return i + 1, cleaned, tf.reduce_any(cleaned != current)

        _, texts, _ = tf.while_loop(lambda i, _t, changed: tf.logical_and(i < 2 * MAX_PASSES, changed), step,
                                    (tf.constant(0), texts, tf.constant(True)))
        return texts

    def _normalize_once(self, texts):
        texts = self._compose(self._map_nfkc(texts))
        texts = tf.strings.regex_replace(texts, self.drop_pattern, "")
        texts = tf.strings.regex_replace(texts, "(?s)" + MARKUP.pattern, " ")
        texts = tf.strings.regex_replace(texts, self.space_pattern, " ")
        texts = tf.strings.regex_replace(texts, "^ | $", "")
        return tf.strings.lower(texts, encoding="utf-8") if self.config.lowercase else texts

    def _map_nfkc(self, texts):
        chars = tf.strings.unicode_split(texts, "UTF-8")
        points = tf.cast(tf.strings.unicode_decode(texts, "UTF-8"), tf.int64)
        mapped = tf.ragged.map_flat_values(self.nfkc_table.lookup, points)
        merged = tf.ragged.map_flat_values(lambda m, c: tf.where(m == "", c, m), mapped, chars)
        return tf.strings.reduce_join(merged, axis=-1)

    def _compose(self, texts):
        """One pass of canonical composition of adjacent pairs (repeated passes chain them)."""
        points = tf.cast(tf.strings.unicode_decode(texts, "UTF-8"), tf.int64)
        flat, rows = points.flat_values, points.value_rowids()
        same_row = rows[1:] == rows[:-1]
        composed = self.compose_table.lookup(flat[:-1] * _UNICODE_END + flat[1:])
        joins = tf.logical_and(same_row, composed >= 0)
        # Where pairs overlap (a b c with ab and bc composable) the left one wins.
        joins = tf.logical_and(joins, tf.logical_not(tf.concat([[False], joins], 0)[:-1]))
        length = tf.size(flat)  # one more than `joins`, except for an all-empty batch
        starts = tf.concat([joins, [False]], 0)[:length]
        dropped = tf.concat([[False], joins], 0)[:length]
        values = tf.where(starts, tf.concat([composed, [0]], 0)[:length], flat)
        keep = tf.logical_not(dropped)
        result = tf.RaggedTensor.from_value_rowids(tf.boolean_mask(values, keep), tf.boolean_mask(rows, keep),
                                                   nrows=points.nrows())
        return tf.strings.unicode_encode(tf.cast(result, tf.int32), "UTF-8")


# Tables built from Python's unicodedata, so serving and ingest share one Unicode version ----
def _is_char(code: int) -> bool:
    return not 0xD800 <= code <= 0xDFFF  # surrogates cannot occur in UTF-8 strings


@functools.cache  # ~1 s of walking every code point; the same for every export in a process
def _nfkc_tables() -> tuple[dict[int, str], dict[int, int]]:
    """(code point -> its NFKC string where that differs, (first, second) pair key -> composed)."""
    nfkc, pairs = {}, {}
    for code in range(_UNICODE_END):
        if not _is_char(code):
            continue
        char = chr(code)
        normal = unicodedata.normalize("NFKC", char)
        if normal != char:
            nfkc[code] = normal
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            parts = [int(part, 16) for part in decomposition.split()]
            if len(parts) == 2 and unicodedata.normalize("NFC", chr(parts[0]) + chr(parts[1])) == char:
                pairs[parts[0] * _UNICODE_END + parts[1]] = code
    for lead in range(19):  # Hangul syllables compose algorithmically: L + V, then LV + T
        for vowel in range(21):
            syllable = 0xAC00 + (lead * 21 + vowel) * 28
            pairs[(0x1100 + lead) * _UNICODE_END + 0x1161 + vowel] = syllable
            for trail in range(1, 28):
                pairs[syllable * _UNICODE_END + 0x11A7 + trail] = syllable + trail
    return nfkc, pairs


@functools.cache
def _dropped_code_points() -> tuple[int, ...]:
    """What mmpipe.ingest.clean.text drops: control characters other than whitespace, format characters."""
    dropped = []
    for code in range(_UNICODE_END):
        if _is_char(code):
            category = unicodedata.category(chr(code))
            if category == "Cf" or (category == "Cc" and not chr(code).isspace()):
                dropped.append(code)
    return tuple(dropped)


@functools.cache
def _space_code_points() -> tuple[int, ...]:
    """What str.isspace() (and so Python's \\s and str.strip) treats as whitespace."""
    return tuple(code for code in range(_UNICODE_END) if _is_char(code) and chr(code).isspace())


def _char_class(codes: tuple[int, ...]) -> str:
    """An RE2 character class body for `codes` (sorted), as ranges of \\x{...} escapes."""
    parts, start = [], None
    for index, code in enumerate(codes):
        if start is None:
            start = code
        if index + 1 == len(codes) or codes[index + 1] != code + 1:
            parts.append(f"\\x{{{start:x}}}" if start == code else f"\\x{{{start:x}}}-\\x{{{code:x}}}")
            start = None
    return "".join(parts)
