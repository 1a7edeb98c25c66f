"""The declared schemas: what a shard, a chunk and a quarantine row are, and the cast that enforces them."""

import pyarrow as pa
import pytest

from mmpipe.ingest.schema import (
    IMAGE_SHAPE_KEY,
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    chunk_schema,
    quarantine_rows,
    shard_schema,
)

RAW_COLUMNS = ("text", "image", "label", "split", "group", "extra")


def test_a_shard_stores_each_image_as_one_fixed_size_value():
    schema = shard_schema(8)
    assert schema.field("image").type == pa.binary(8 * 8 * 3)
    assert schema.metadata[IMAGE_SHAPE_KEY] == b"8,8,3"
    assert [f.name for f in schema if not f.nullable] == [n for n in schema.names if n not in ("group", "extra")]


def test_a_chunk_keeps_no_locators_so_moved_rows_keep_their_cache():
    names = chunk_schema(8).names
    assert "row" not in names and "source" not in names
    assert {"raw_text", "raw_image", "content_key", "reason", "detail"} <= set(names)


def test_quarantine_rows_keep_the_raw_values_and_the_verdict():
    chunk = pa.table({"id": ["a"], **{f"raw_{n}": [f"raw {n}"] for n in RAW_COLUMNS},
                      "reason": ["image_missing"], "detail": ["no file at x.png"]})
    rows = quarantine_rows(chunk, pa.table({"row": [7], "source": ["m.csv:8"]}))
    assert rows.schema == QUARANTINE_SCHEMA
    assert rows.to_pylist()[0] == {"row": 7, "source": "m.csv:8", "id": "a", "text": "raw text", "image": "raw image",
                                   "label": "raw label", "split": "raw split", "group": "raw group",
                                   "extra": "raw extra",
                                   "reason": "image_missing", "detail": "no file at x.png"}


def test_a_quarantine_row_without_a_reason_does_not_fit_the_schema():
    chunk = pa.table({"id": ["a"], **{f"raw_{n}": [None] for n in RAW_COLUMNS},
                      "reason": pa.array([None], pa.string()), "detail": ["?"]})
    with pytest.raises(ValueError, match="reason"):
        quarantine_rows(chunk, pa.table({"row": [0], "source": ["m.csv:1"]}))
    assert RAW_SCHEMA.field("reason").nullable  # a raw row may come without a verdict
