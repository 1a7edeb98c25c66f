"""The tables Great Expectations checks: derived from shards without touching the pixels.

A shard frame keeps every shard column but replaces `text` by `text_length` and `text_hash` (a
64-bit hash, so (image, text) pairs can be compared without carrying the text) and `image` by
`image_bytes` (its length, from the schema when the type is fixed-size), so the suite can check
the exact column set and sizes while reading only small columns. The dataset frame adds, per row,
facts that depend on the whole version (class counts, split shares, splits per image).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmpipe.config import SPLITS, Config
from mmpipe.ingest.version import DatasetVersion

DATASET_COLUMNS = ["id", "image_sha256", "text_hash", "label", "split", "text_length", "image_brightness",
                   "image_colourfulness"]
STAT_COLUMNS = ("text_length", "image_brightness", "image_colourfulness")
# Reference weights are smoothed so that a class absent from the reference gives a large, finite KL.
KL_SMOOTHING = 1e-4


def shard_table(path) -> pa.Table:
    """The derived table of one shard file (text -> text_length, image -> image_bytes), in Arrow."""
    schema = pq.read_schema(path)
    columns = [name for name in schema.names if name != "image"]
    table = pq.read_table(path, columns=columns)
    derived: dict[str, Any] = {}
    for name in schema.names:
        if name == "text":
            derived["text_length"] = pc.utf8_length(table["text"])
            derived["text_hash"] = _text_hashes(table["text"])
        elif name == "image":
            derived["image_bytes"] = _image_lengths(path, schema.field("image").type, table.num_rows)
        else:
            derived[name] = table[name]
    return pa.table({name: _widen(column) for name, column in derived.items()})


def _widen(column):
    """int64/float64 only: GX vectorizes range checks just for those dtypes (10x+ faster)."""
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    if pa.types.is_floating(column.type):
        return pc.cast(column, pa.float64())
    return column


def _text_hashes(texts: pa.ChunkedArray) -> pa.Array:
    """A 64-bit hash per text (pandas' vectorized SipHash): equal texts, equal hashes."""
    hashes = pd.util.hash_pandas_object(texts.to_pandas(), index=False).to_numpy().view("int64")
    return pa.array(hashes, pa.int64())


def _image_lengths(path, image_type: pa.DataType, rows: int) -> pa.Array:
    if pa.types.is_fixed_size_binary(image_type):
        return pa.array([image_type.byte_width] * rows, pa.int64())  # known from the schema, no read
    return pc.binary_length(pq.read_table(path, columns=["image"])["image"])


def frame_of(tables: list[pa.Table]) -> pd.DataFrame:
    """Shard tables with one column set as one pandas frame (concatenated in Arrow: no per-column takes)."""
    return pa.concat_tables(tables).to_pandas()


def dataset_frame(shard_tables: list[pa.Table], config: Config) -> pd.DataFrame:
    """One row per accepted example, with the per-class train count, its split's share error and
    the number of splits its image appears in."""
    tables = [t.select([c for c in DATASET_COLUMNS if c in t.column_names]) for t in shard_tables]
    if not tables:  # no accepted rows: an empty frame, so the suite reports what is missing
        return pd.DataFrame({name: pd.Series(dtype="object") for name in DATASET_COLUMNS}
                            | {"train_count_of_label": pd.Series(dtype="int64"),
                               "split_share_error": pd.Series(dtype="float64"),
                               "image_split_count": pd.Series(dtype="int64")})
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    train_counts = frame.loc[frame["split"] == "train", "label"].value_counts()
    frame["train_count_of_label"] = frame["label"].map(train_counts).fillna(0).astype("int64")
    shares = split_shares(frame)
    ratios = config.ingest.split_ratios.model_dump()  # the dataset's own ratios (see contract_parameters)
    frame["split_share_error"] = (frame["split"].map(shares) - frame["split"].map(ratios).fillna(0.0)).abs()
    frame["image_split_count"] = frame.groupby("image_sha256")["split"].transform("nunique").astype("int64")
    return frame


def split_shares(frame: pd.DataFrame) -> pd.Series:
    """Each split's share of the rows (what `split_share_error` compares with the configured ratios)."""
    return frame["split"].value_counts(normalize=True)


def dataset_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    """What later versions are compared with: the label distribution and the column medians.

    Medians, not means: robust to a few odd rows, and GX computes a mean through a per-value
    Python loop (a decimal check) that costs more than the rest of a validation.
    """
    weights = frame["label"].value_counts(normalize=True).sort_index()
    return {
        "rows": int(len(frame)),
        "label_weights": {str(label): float(weight) for label, weight in weights.items()},
        "medians": {name: float(frame[name].median()) for name in STAT_COLUMNS if name in frame},
    }


def dataset_config(version: DatasetVersion, config: Config) -> Config:
    """`config` with the text, image and ingest settings the dataset was built with (from dataset.json).

    Contracts judge data against how it was made, so validating with another --config (or none)
    does not turn a good dataset into false failures.
    """
    return version.built_with(config)


def contract_parameters(version: DatasetVersion, config: Config, reference: dict[str, Any]) -> dict[str, Any]:
    """Values the suites refer to as {"$PARAMETER": name}: from the dataset's settings, config, reference."""
    size = version.image_size
    ratios = config.ingest.split_ratios.model_dump()
    labels = sorted(set(reference["label_weights"]) | set(version.classes))
    raw = [reference["label_weights"].get(label, 0.0) + KL_SMOOTHING for label in labels] or [1.0]
    labels = labels or [""]
    tolerance = config.contracts.stats_tolerance
    parameters: dict[str, Any] = {
        "splits": [split for split in SPLITS if ratios[split] > 0],
        "image_bytes": size * size * 3,
        "text_min_chars": 0 if config.text.allow_empty else 1,
        "text_max_chars": config.text.max_chars,
        "orig_side_max": config.contracts.max_orig_side,
        "min_train_per_class": config.contracts.min_train_per_class,
        "split_tolerance": config.contracts.split_tolerance,
        "kl_threshold": config.contracts.kl_threshold,
        "reference_label_partition": {"values": labels, "weights": [w / math.fsum(raw) for w in raw]},
    }
    for name, median in reference["medians"].items():
        parameters[f"{name}_median_min"] = median * (1 - tolerance)
        parameters[f"{name}_median_max"] = median * (1 + tolerance)
    return parameters
