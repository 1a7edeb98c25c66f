"""Sliced metrics, as TFMA users expect: the same numbers on subsets of the test rows.

A model that is good on average can fail a whole kind of input: every GIF, every tiny image, every
one-word caption. Each row falls into one slice per dimension:

* `class`: its true label (accuracy there is the class's recall);
* `image_format`: the format of the original file (PNG, JPEG, ...);
* `image_size`: the original's longer side, in power-of-two buckets;
* `text_words`: how many words its text has, in buckets;
* every column named in `evaluate.slice_by`: a shard column (`group`, ...) or a column of the source
  manifest that ingest kept (`extra`).

Every slice gets the metrics of `classification_metrics` on its own rows (one implementation) and a 95%
interval of its accuracy (Wilson's), which says how far its number could be from the truth on so few rows.
A slice is flagged `small` when it has fewer than `evaluate.min_slice_rows` rows *and* at most half of an
even share of its dimension's rows: the rare kind of input whose number rests on little evidence. The
slices of an ordinary small test set (four classes of 25 rows) are not all flagged; their intervals say
how wide they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mmpipe.errors import EvaluationError
from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.ingest.version import DatasetVersion
from mmpipe.train.inputs import split_paths

_KEPT = ("accuracy", "macro_f1", "log_loss", "ece")  # per slice; the rest is noise at slice sizes
_SHARD_COLUMNS = ("id", "text", "orig_width", "orig_height", "orig_format", "label")
_WORD_BUCKETS = ((0, "no words"), (1, "1-2 words"), (3, "3-5 words"), (6, "6-15 words"), (16, "16-50 words"),
                 (51, "over 50 words"))
MISSING = "(missing)"


def slice_metrics(version: DatasetVersion, split: str, ids: list[str], labels: np.ndarray,
                  probabilities: np.ndarray, classes: list[str], *, slice_by: list[str], min_rows: int,
                  ece_bins: int) -> dict[str, list[dict[str, Any]]]:
    """{dimension: [{"value", "n", "small", metric: ...}, ...]} for the rows `ids` (in prediction order).

    Raises:
        EvaluationError: a `slice_by` column that the dataset's shards do not have.
    """
    from scipy.stats import binomtest

    values = slice_values(version, split, ids, slice_by)
    sliced = {}
    for dimension, column in values.items():
        found = []
        ordered = _ordered(dimension, column)
        for value in ordered:
            members = column == value
            scored = classification_metrics(labels[members], probabilities[members], classes, ece_bins=ece_bins)
            count = int(members.sum())
            right = int(round(scored["metrics"]["accuracy"] * count))
            interval = binomtest(right, count).proportion_ci(0.95, method="wilson")
            entry = {"value": str(value), "n": count, "small": is_small(count, len(column), len(ordered), min_rows),
                     **{key: scored["metrics"][key] for key in _KEPT},
                     "accuracy_interval": [float(interval.low), float(interval.high)]}
            if dimension == "class":
                entry["macro_f1"] = None  # one true class: its accuracy is its recall, a macro F1 means nothing
            found.append(entry)
        sliced[dimension] = found
    return sliced


def is_small(rows: int, dimension_rows: int, slices: int, min_rows: int) -> bool:
    """Fewer than `min_rows` and at most half of an even share of the dimension's rows."""
    return rows < min_rows and rows <= dimension_rows / (2 * slices)


def slice_values(version: DatasetVersion, split: str, ids: list[str], slice_by: list[str]) -> dict[str, np.ndarray]:
    """Each row's slice value per dimension, aligned with `ids`."""
    paths = split_paths(version, split)
    available = set(pq.read_schema(paths[0]).names) if paths else set()
    wanted = [name for name in slice_by if name in available and name not in _SHARD_COLUMNS]
    extras = [name for name in slice_by if name not in available]
    if extras and "extra" not in available:
        raise EvaluationError(f"evaluate.slice_by names {', '.join(extras)}, which dataset {version.version} does not "
                              "keep (it was ingested before mmpipe kept manifest columns): re-ingest the source")
    columns = [*_SHARD_COLUMNS, *wanted, *(["extra"] if extras else [])]
    rows: dict[str, list] = {name: [] for name in columns}
    for path in paths:
        table = pq.read_table(path, columns=columns)
        for name in columns:
            rows[name].extend(table[name].to_pylist())
    position = {row_id: index for index, row_id in enumerate(rows["id"])}
    order = np.array([position[row_id] for row_id in ids], dtype=np.int64)
    if extras:
        kept = [json.loads(text) if text else {} for text in rows["extra"]]
        unknown = [name for name in extras if not any(name in row for row in kept)]
        if unknown:
            known = sorted({name for row in kept for name in row} | available - {"extra", "image"})
            raise EvaluationError(f"evaluate.slice_by names {', '.join(unknown)}, a column no {split} row of dataset "
                                  f"{version.version} has; its columns: {', '.join(known)}")
        for name in extras:
            rows[name] = [row.get(name) for row in kept]
    derived: dict[str, Callable[[int], Any]] = {
        "class": lambda i: rows["label"][i],
        "image_format": lambda i: rows["orig_format"][i] or MISSING,
        "image_size": lambda i: size_bucket(max(rows["orig_width"][i], rows["orig_height"][i])),
        "text_words": lambda i: words_bucket(len(rows["text"][i].split())),
    }
    for name in slice_by:
        derived[name] = lambda i, name=name: slice_label(rows[name][i])
    return {dimension: np.array([describe(i) for i in order], dtype=object) for dimension, describe in derived.items()}


def slice_label(value: Any) -> str:
    """A slice value as the manifest wrote it: JSON's true/false, not Python's True/False."""
    if value is None or value == "":
        return MISSING
    return json.dumps(value) if isinstance(value, bool) else str(value)


def size_bucket(pixels: int) -> str:
    """The power-of-two bucket of an image's longer side: '32-63 px'."""
    if pixels < 16:
        return "under 16 px"
    low = 1 << (int(pixels).bit_length() - 1)
    return f"{low}-{2 * low - 1} px" if low < 1024 else "1024 px and over"


def words_bucket(words: int) -> str:
    return next(name for low, name in reversed(_WORD_BUCKETS) if words >= low)


def _ordered(dimension: str, column: np.ndarray) -> list[str]:
    """Buckets in their natural order; other values largest slice first."""
    present = set(column.tolist())
    if dimension == "text_words":
        return [name for _, name in _WORD_BUCKETS if name in present]
    if dimension == "image_size":
        # "under 16 px", "16-31 px", ..., "1024 px and over": by the bucket's lower bound
        return sorted(present, key=lambda name: 0 if name.startswith("under") else int(name.split()[0].split("-")[0]))
    counts = {value: int((column == value).sum()) for value in present}
    return sorted(present, key=lambda value: (-counts[value], value))


def smallest(sliced: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The slices flagged small, smallest first: what the report warns about."""
    flagged = [(dimension, entry) for dimension, entries in sliced.items() for entry in entries if entry["small"]]
    return sorted(flagged, key=lambda pair: pair[1]["n"])
