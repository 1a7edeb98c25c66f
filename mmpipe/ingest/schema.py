"""The declared Arrow schemas: every batch is cast to one of these, never inferred per file.

* RAW: a source row as read, before any judgement (staged per chunk).
* CHUNK: a processed chunk, raw columns plus the cleaned ones plus the verdict.
* SHARD: an accepted, standardized row; what training reads.
* QUARANTINE: a rejected row as it was in the source, with `reason` and `detail`.
"""

from __future__ import annotations

import pyarrow as pa

IMAGE_SHAPE_KEY = b"mmpipe.image_shape"

RAW_FIELDS = [
    pa.field("row", pa.int64(), nullable=False),  # 0-based position in the source
    pa.field("source", pa.string(), nullable=False),  # where the row came from: "manifest.csv:12", "cat/a.jpg"
    pa.field("id", pa.string()),
    pa.field("text", pa.string()),
    pa.field("image", pa.string()),
    pa.field("label", pa.string()),
    pa.field("split", pa.string()),
    pa.field("group", pa.string()),
    # The manifest's other columns as one JSON object ({"region": "eu"}), kept for slicing and lineage.
    pa.field("extra", pa.string()),
    # Set when the row was already unusable as read (bad JSON line, undecodable bytes).
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
]
RAW_SCHEMA = pa.schema(RAW_FIELDS)

QUARANTINE_SCHEMA = pa.schema(
    [field.with_nullable(field.name not in {"row", "source", "reason", "detail"}) for field in RAW_FIELDS]
)


def shard_schema(image_size: int) -> pa.Schema:
    """Shard columns; the image is S*S*3 RGB bytes in one fixed-size value per row."""
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("image", pa.binary(image_size * image_size * 3), nullable=False),
            pa.field("image_sha256", pa.string(), nullable=False),
            pa.field("orig_width", pa.int32(), nullable=False),
            pa.field("orig_height", pa.int32(), nullable=False),
            pa.field("orig_format", pa.string(), nullable=False),
            # Computed at ingest so contracts can watch image drift without reading pixels.
            pa.field("image_brightness", pa.float32(), nullable=False),
            pa.field("image_colourfulness", pa.float32(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("group", pa.string()),
            pa.field("source", pa.string(), nullable=False),
            pa.field("text_truncated", pa.bool_(), nullable=False),
            pa.field("extra", pa.string()),  # the manifest's other columns (JSON object), or null
        ],
        metadata={IMAGE_SHAPE_KEY: f"{image_size},{image_size},3".encode()},
    )


def chunk_schema(image_size: int) -> pa.Schema:
    """A processed chunk: raw_* columns as read, then the cleaned row, then the verdict.

    It holds no `row`/`source` locators: a cached chunk stays valid when rows above it move.
    """
    raw = [pa.field(f"raw_{field.name}", field.type) for field in RAW_FIELDS[2:9]]
    cleaned = [field.with_nullable(True) for field in shard_schema(image_size) if field.name != "source"]
    return pa.schema(
        [
            *raw,
            *cleaned,
            pa.field("content_key", pa.string()),  # hash of cleaned text + original image bytes
            pa.field("reason", pa.string()),
            pa.field("detail", pa.string()),
        ]
    )


def quarantine_rows(chunk: pa.Table, locators: pa.Table) -> pa.Table:
    """QUARANTINE rows (raw values + verdict) from processed rows and their `row`/`source` locators."""
    columns = {
        "row": locators["row"],
        "source": locators["source"],
        "id": chunk["id"],  # the given id, else one derived from the row's content
        **{name: chunk[f"raw_{name}"] for name in ("text", "image", "label", "split", "group", "extra")},
        "reason": chunk["reason"],
        "detail": chunk["detail"],
    }
    return pa.table(columns).cast(QUARANTINE_SCHEMA)
