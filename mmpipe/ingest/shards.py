"""Parquet writing: one set of writer options, rolling shard files, atomic renames, content hashes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmpipe.config import SPLITS
from mmpipe.files import atomic_path, commit, sha256_file
from mmpipe.ingest.version import DataFile

# Pixels are already dense: compressing them costs CPU on every read and saves almost nothing.
UNCOMPRESSED_COLUMNS = frozenset({"image"})
COMPRESSION = "zstd"
# Training reads whole row groups; ~1k rows keeps a read buffer at S=64 near 12 MB.
ROW_GROUP_ROWS = 1024


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Writer options: pixels stored plain (no compression, dictionary or statistics), the rest zstd."""
    compressed = [name for name in schema.names if name not in UNCOMPRESSED_COLUMNS]
    return {
        "compression": {name: ("none" if name in UNCOMPRESSED_COLUMNS else COMPRESSION) for name in schema.names},
        "use_dictionary": compressed,
        "write_statistics": compressed,
    }


def write_table(table: pa.Table, path: Path) -> None:
    """Write one table atomically with the project's Parquet options."""
    with atomic_path(path) as temp:
        pq.write_table(table, temp, row_group_size=ROW_GROUP_ROWS, **parquet_options(table.schema))


class ShardWriter:
    """Append tables; roll to a new file every `rows_per_shard` rows.

    Each file is written under a temporary name and renamed to `<prefix>-<n>-<sha12>.parquet`
    only when complete, so a reader never sees half a shard and names change with content. The
    prefix is the split of the rows (or `quarantine`); `files` describes what was written, and
    `content` is a sha256 of the rows' values, in order: what the rows are, whatever bytes this
    pyarrow build's Parquet writer made of them (the dataset version is named by it).
    """

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema, rows_per_shard: int, data_dir: Path):
        self.folder, self.prefix, self.schema = folder, prefix, schema
        self.rows_per_shard = max(1, rows_per_shard)
        self.data_dir = data_dir
        self.files: list[DataFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._temp: Path | None = None
        self._rows = 0
        self._content = hashlib.sha256()

    @property
    def content(self) -> str:
        return self._content.hexdigest()

    def _add_content(self, table: pa.Table) -> None:
        for name in table.column_names:
            column = table[name]
            if pa.types.is_fixed_size_binary(column.type):  # the pixels: hashed as the bytes they are
                width = column.type.byte_width
                for chunk in column.chunks:
                    data = memoryview(chunk.buffers()[1])
                    self._content.update(data[chunk.offset * width:(chunk.offset + len(chunk)) * width])
            else:
                self._content.update(json.dumps(column.to_pylist(), ensure_ascii=False).encode())

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._abandon_file()
            return
        try:
            self._finish_file()
        except BaseException:
            self._abandon_file()
            raise

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        self._add_content(table)
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                self._open_file()
            take = min(self.rows_per_shard - self._rows, table.num_rows - offset)
            self._writer.write_table(table.slice(offset, take), row_group_size=ROW_GROUP_ROWS)
            self._rows += take
            offset += take
            if self._rows >= self.rows_per_shard:
                self._finish_file()

    def _open_file(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._temp = self.folder / f".{self.prefix}-{len(self.files):05d}.{os.getpid()}.tmp"
        self._writer = pq.ParquetWriter(self._temp, self.schema, **parquet_options(self.schema))
        self._rows = 0

    def _finish_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        digest = sha256_file(self._temp)
        final = self.folder / f"{self.prefix}-{len(self.files):05d}-{digest[:12]}.parquet"
        commit(self._temp, final)
        stat = final.stat()
        self.files.append(DataFile(path=str(final.relative_to(self.data_dir)), sha256=digest, rows=self._rows,
                                   bytes=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                   split=self.prefix if self.prefix in SPLITS else None))
        self._writer, self._temp = None, None

    def _abandon_file(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
        except OSError:
            pass  # a full disk fails the close's flush too: the half-written file goes all the same
        finally:
            self._temp.unlink(missing_ok=True)
            self._writer, self._temp = None, None
            self._writer, self._temp = None, None
