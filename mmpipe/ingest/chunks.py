"""Chunks: the unit of parallel, cached ingest work.

Planning streams the source once, cuts it into chunks at content-defined boundaries (so inserting
rows only disturbs the chunk they land in), stages each chunk's raw rows as a small Parquet file
and fingerprints it: the rows' content, the size and mtime of every image they reference (size and
ETag in a bucket), the ingest settings and the cleaning code. Processing a chunk whose fingerprint
was processed before is a file lookup.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmpipe.config import Config
from mmpipe.files import stable_hash
from mmpipe.ingest.bucket import BucketLocation
from mmpipe.ingest.clean.record import SourceLocation, clean_record
from mmpipe.ingest.schema import RAW_SCHEMA, chunk_schema
from mmpipe.ingest.shards import write_table
from mmpipe.ingest.sources import RawSource

CACHE_DIR = "cache"
REJECTED_KEY = b"mmpipe.rejected"
# Content-defined boundaries give chunks of about chunk_rows; these bound the spread.
MIN_CHUNK_FRACTION = 4
MAX_CHUNK_FACTOR = 4


@dataclass(frozen=True)
class ChunkPlan:
    """A staged chunk of raw rows and the key its processed result is stored under."""

    index: int
    rows: int
    raw_path: Path
    key: str


@dataclass(frozen=True)
class ChunkResult:
    """A processed chunk on disk; `cached` when an earlier run had already produced it."""

    index: int
    path: Path
    rows: int
    rejected: int
    cached: bool


# The modules (under mmpipe/ingest/) that decide what a processed row looks like; a change to any of
# them must invalidate every cached chunk.
CLEANING_CODE = ("clean/*.py", "split.py", "schema.py", "reasons.py")


def code_fingerprint(package: Path | None = None) -> str:
    """Hash of the code that decides what a processed row looks like: ours (CLEANING_CODE under
    `package`, default mmpipe/ingest), Pillow's and numpy's versions."""
    import numpy
    import PIL

    package = Path(package or Path(__file__).parent)
    files = [file for pattern in CLEANING_CODE for file in sorted(package.glob(pattern))]
    digest = hashlib.sha256(f"pillow {PIL.__version__} numpy {numpy.__version__}".encode())
    for file in files:
        digest.update(str(file.relative_to(package)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def plan_chunks(source: RawSource, cache_dir: Path, settings_key: str, chunk_rows: int) -> list[ChunkPlan]:
    """Stream `source` into staged raw chunks under `cache_dir`/raw and fingerprint each one.

    Args:
        settings_key: hash of everything besides the rows that shapes processing (config, code).
        chunk_rows: the average chunk size; boundaries depend on row content, not position.
    """
    plans: list[ChunkPlan] = []
    pending: list[dict[str, Any]] = []
    content = hashlib.sha256()
    min_rows = max(1, chunk_rows // MIN_CHUNK_FRACTION)
    max_rows = chunk_rows * MAX_CHUNK_FACTOR

    def cut() -> None:
        staged_key = stable_hash([content.hexdigest(), pending[0]["row"], [row["source"] for row in pending]], 24)
        raw_path = cache_dir / "raw" / f"{staged_key}.parquet"
        if not raw_path.exists():
            write_table(pa.Table.from_pylist(pending, schema=RAW_SCHEMA), raw_path)
        key = stable_hash([content.hexdigest(), settings_key], 24)
        plans.append(ChunkPlan(index=len(plans), rows=len(pending), raw_path=raw_path, key=key))

    for row in source.rows():
        fields = {name: row[name] for name in RAW_SCHEMA.names if name not in ("row", "source")}
        row_digest = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).digest()
        content.update(row_digest)
        content.update(source.image_stat(row["image"]).encode())
        pending.append(row)
        boundary = int.from_bytes(row_digest[:8], "big") % chunk_rows == 0
        if (boundary and len(pending) >= min_rows) or len(pending) >= max_rows:
            cut()
            pending, content = [], hashlib.sha256()
    if pending:
        cut()
    return plans


def process_chunk(
    plan: ChunkPlan,
    location: SourceLocation | BucketLocation,
    config: Config,
    cache_dir: Path,
    labelled: bool = True,
) -> ChunkResult:
    """Clean every row of a staged chunk (or find the result of an identical earlier chunk); `labelled=False`
    for data to score (see clean_record; the chunk's key must then say so)."""
    path = cache_dir / "chunks" / f"{plan.key}.parquet"
    if path.exists():
        metadata = pq.read_metadata(path)
        rejected = int(metadata.schema.to_arrow_schema().metadata[REJECTED_KEY])
        return ChunkResult(plan.index, path, metadata.num_rows, rejected, cached=True)
    processed = [clean_record(raw, images, config, labelled)
                 for window, images in location.windows(pq.read_table(plan.raw_path).to_pylist(), config.image)
                 for raw in window]
    rejected = sum(row["reason"] is not None for row in processed)
    schema = chunk_schema(config.image.size).with_metadata({REJECTED_KEY: str(rejected).encode()})
    write_table(pa.Table.from_pylist(processed, schema=schema), path)
    return ChunkResult(plan.index, path, len(processed), rejected, cached=False)


def prune_cache(cache_dir: Path, plans: list[ChunkPlan]) -> None:
    """Remove staged and processed chunks that the current plan no longer uses (disk stays bounded)."""
    keep = {plan.raw_path.name for plan in plans} | {f"{plan.key}.parquet" for plan in plans}
    for folder in ("raw", "chunks"):
        for path in (cache_dir / folder).glob("*.parquet"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
