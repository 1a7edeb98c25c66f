"""Raw sources: manifests (CSV, JSONL, Parquet) and folder trees, read as a stream of raw rows.

A raw row is a dict with the RAW schema's columns. Nothing here judges a row's content; rows that
cannot even be parsed carry `reason`/`detail` so that they are quarantined, not lost.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmpipe.errors import SourceError
from mmpipe.ingest.bucket import BucketListing, BucketLocation, open_bucket_source, read_small_objects, tree_of
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.reasons import Reason
from mmpipe.storage.urls import is_url

MANIFEST_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
REQUIRED_COLUMNS = ("text", "image", "label")
OPTIONAL_COLUMNS = ("id", "split", "group")
KNOWN_COLUMNS = frozenset((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SIDECAR_SUFFIX = ".txt"
# A sidecar is a caption, not a book: past this many bytes the rest is never read.
MAX_SIDECAR_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 4096


@dataclass
class RawSource:
    """A source mmpipe can read. `ignored` fills up while `rows()` walks a folder tree.

    A source in a bucket has `bucket` (see mmpipe.ingest.bucket); its `path` is then the manifest's local
    copy, or for a prefix of LABEL/FILE objects the prefix's name.
    """

    path: Path
    kind: str
    root: Path
    ignored: list[str] = field(default_factory=list)
    bucket: BucketListing | None = field(default=None, repr=False)
    labelled: bool = True  # False when scoring: no label column needed, images at a tree's top are rows too

    @property
    def base_dir(self) -> Path:
        """The folder that relative image references start from."""
        return self.path if self.kind == "folder" else self.path.parent

    def describe(self) -> dict[str, str]:
        if self.bucket is not None:
            location = self.bucket.location
            return {"path": location.url, "kind": self.kind, "root": f"{location.scheme}://{location.root}"}
        return {"path": str(self.path), "kind": self.kind, "root": str(self.root)}

    def location(self) -> SourceLocation | BucketLocation:
        """Where the chunk workers resolve and read this source's images."""
        return self.bucket.location if self.bucket is not None else SourceLocation(self.base_dir, self.root)

    def image_stat(self, reference: str | None) -> str:
        """What a chunk's fingerprint holds for an image: size and mtime (a file), size and ETag (an object)."""
        if self.bucket is not None:
            return self.bucket.stat(reference)
        if not reference:
            return "none"
        try:
            stat = os.stat(self.base_dir / reference)
        except (OSError, ValueError):
            return "missing"
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def rows(self) -> Iterator[dict[str, Any]]:
        """Stream raw rows in source order; memory stays bounded by one batch."""
        readers = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows, "folder": _folder_rows}
        yield from readers[self.kind](self)


def open_source(path: str | Path, labelled: bool = True) -> RawSource:
    """Check that `path` is a readable manifest or folder tree and say what kind it is. `labelled=False`
    (data to score) needs no label column, and a tree's top-level images are rows without a label.

    Raises:
        SourceError: the path is missing, has an unknown format, or lacks a required column.
    """
    if is_url(path):
        return _open_bucket_source(str(path), labelled)
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise SourceError(f"source {path} does not exist; pass a manifest (.csv, .jsonl, .parquet) or a folder")
    if path.is_dir():
        if not any(entry.is_file() for entry in path.rglob("*")):  # stops at the first file of a real tree
            raise SourceError(f"source {path} is an empty folder; put LABEL/FILE files under it (a folder per class), "
                              "or pass a manifest")
        return RawSource(path=path, kind="folder", root=path.resolve(), labelled=labelled)
    if not path.is_file():  # a FIFO would block the reader forever (holding the data dir's lock), a device never end
        raise SourceError(f"source {path} is not a regular file (a pipe, device or socket); pass a manifest file "
                          "(.csv, .jsonl, .parquet) or a folder")
    kind = MANIFEST_KINDS.get(path.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(MANIFEST_KINDS))
        raise SourceError(f"source {path.name} has an unknown format {path.suffix!r}; use one of {known} or a folder")
    source = RawSource(path=path, kind=kind, root=path.parent.resolve(), labelled=labelled)
    _check_columns(source, _manifest_columns(source))
    return source


def _open_bucket_source(url: str, labelled: bool) -> RawSource:
    kind, copy, location = open_bucket_source(url)
    bucket = BucketListing(location)
    if kind == "folder":
        if not bucket.objects:  # a tree is read from its listing anyway
            raise SourceError(f"source {url} is an empty prefix; put LABEL/FILE objects under it, or pass a manifest")
        return RawSource(path=Path(location.root), kind="folder", root=Path(location.root), bucket=bucket,
                         labelled=labelled)
    kind = MANIFEST_KINDS.get(copy.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(MANIFEST_KINDS))
        raise SourceError(f"source {url} has an unknown format {copy.suffix!r}; use one of {known} or a prefix")
    source = RawSource(path=copy, kind=kind, root=copy.parent, bucket=bucket, labelled=labelled)
    _check_columns(source, _manifest_columns(source))
    return source


def _check_columns(source: RawSource, columns: list[str] | None) -> None:
    if columns is None:
        return
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:  # a reader keeps one of them (the last) for every row, silently
        raise SourceError(f"manifest {source.path.name} has more than one column named {', '.join(repeated)}; "
                          "give each column one name")
    required = [name for name in REQUIRED_COLUMNS if source.labelled or name != "label"]
    missing = [name for name in required if name not in columns]
    if missing:
        raise SourceError(
            f"manifest {source.path.name} lacks the required {', '.join(missing)} "
            f"column{'' if len(missing) == 1 else 's'}; "
            f"it has {', '.join(columns) or 'no columns'} and needs {', '.join(required)}"
        )


def _manifest_columns(source: RawSource) -> list[str] | None:
    """The column names a manifest declares (None: a JSONL file with no object line yet)."""
    try:
        if source.kind == "csv":
            with _open_text(source.path) as handle:
                return [name.strip() for name in next(csv.reader(handle), [])]
        if source.kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(source.path).names)
        with open(source.path, "rb") as handle:
            for line in handle:
                try:
                    value = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if isinstance(value, dict):
                    return list(value)
            return None
    except (OSError, ValueError) as error:
        raise SourceError(f"cannot read manifest {source.path}: {error}") from None


def _open_text(path: Path):
    # surrogateescape keeps undecodable bytes visible so the row can be quarantined as text_invalid.
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _raw_row(row: int, where: str, values: dict[str, Any]) -> dict[str, Any]:
    """A RAW-schema dict: strings or None, broken Unicode marked and made storable."""
    record: dict[str, Any] = {"row": row, "source": where, "reason": None, "detail": None}
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            if isinstance(value, bool | int | float):
                value = str(value)
            else:
                record["reason"] = record["reason"] or Reason.ROW_MALFORMED.value
                record["detail"] = record["detail"] or f"column {name!r} must be text, got {type(value).__name__}"
                value = json.dumps(value, ensure_ascii=False, default=str)
        position = None if value is None else _broken_unicode_at(value)
        if position is not None and record["reason"] is None:
            record["reason"] = Reason.TEXT_INVALID.value
            record["detail"] = f"column {name!r} is not valid UTF-8 text (bad character at position {position})"
        record[name] = None if value is None else _storable(value)
    record["extra"] = _extra(values)
    return record


def _extra(values: dict[str, Any]) -> str | None:
    """The row's other scalar columns as one JSON object (sorted keys: equal rows, equal text), or None.

    Kept, not judged: they are the user's (a region, a capture device) and slice the metrics later.
    Nested values and bytes are not kept: nothing slices by them, and they can be large.
    """
    kept = {str(name).strip(): value for name, value in values.items()
            if name not in KNOWN_COLUMNS and str(name).strip() and isinstance(value, str | int | float | bool)
            and value != ""}
    if not kept:
        return None
    return _storable(json.dumps(kept, ensure_ascii=False, sort_keys=True))


def _broken_unicode_at(value: str) -> int | None:
    try:
        value.encode("utf-8")
        return None
    except UnicodeEncodeError as error:
        return error.start


def _storable(value: str) -> str:
    """Replace lone surrogates (undecodable bytes) with U+FFFD so Arrow can store the raw value."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _csv_rows(source: RawSource) -> Iterator[dict[str, Any]]:
    with _open_text(source.path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        index = 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over the csv module's 128 KiB limit
                row = _raw_row(index, f"{source.path.name}:{reader.line_num}", {})
                row["reason"], row["detail"] = Reason.ROW_MALFORMED.value, f"unparseable CSV record: {error}"
                yield row
                index += 1
                continue
            if not fields:
                continue  # a blank line is not a row
            where = f"{source.path.name}:{reader.line_num}"
            row = _raw_row(index, where, dict(zip(header, fields, strict=False)))
            if len(fields) != len(header) and row["reason"] is None:  # a shifted or cut row: no field can be trusted
                row["reason"] = Reason.ROW_MALFORMED.value
                row["detail"] = f"the row has {len(fields)} fields, the header {len(header)}"
            yield row
            index += 1


def _jsonl_rows(source: RawSource) -> Iterator[dict[str, Any]]:
    with open(source.path, "rb") as handle:
        index = 0
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{source.path.name}:{line_number}"
            text = line.decode("utf-8-sig" if line_number == 1 else "utf-8", errors="surrogateescape")
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
                row = _raw_row(index, where, {"text": _storable(text.strip())[:1000]})
                row["reason"], row["detail"] = Reason.ROW_MALFORMED.value, f"line {line_number}: invalid JSON ({error})"
                yield row
            else:
                if isinstance(value, dict):
                    yield _raw_row(index, where, value)
                else:
                    row = _raw_row(index, where, {"text": _storable(text.strip())[:1000]})
                    row["reason"] = Reason.ROW_MALFORMED.value
                    row["detail"] = f"line {line_number}: expected a JSON object, got {type(value).__name__}"
                    yield row
            index += 1


def _parquet_rows(source: RawSource) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source.path)
    # The known columns, and the other scalar ones (kept as the row's `extra`).
    names = [field.name for field in parquet.schema_arrow if field.name in KNOWN_COLUMNS
             or pa.types.is_string(field.type) or pa.types.is_integer(field.type)
             or pa.types.is_floating(field.type) or pa.types.is_boolean(field.type)]
    index = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=names):
        columns = {}
        for name in names:
            column = batch.column(name)
            try:
                columns[name] = pc.cast(column, pa.string()).to_pylist()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                columns[name] = column.to_pylist()  # nested values: judged row by row
        for offset in range(batch.num_rows):
            yield _raw_row(index, f"{source.path.name}#{index}", {name: columns[name][offset] for name in names})
            index += 1


def _folder_rows(source: RawSource) -> Iterator[dict[str, Any]]:
    index = 0
    for label, names in _tree(source):
        if label.startswith("."):
            continue
        if names is None:
            if not source.labelled and Path(label).suffix.lower() in IMAGE_SUFFIXES and not label.startswith("."):
                yield _unlabelled_image(source, index, label)  # data to score: an image with no class folder
                index += 1
                continue
            source.ignored.append(f"{label} (not inside a <label>/ folder)")
            continue
        images = {Path(name).stem for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES}
        wanted = [name for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")]
        captions = _sidecars(source, label, [Path(name).with_suffix(SIDECAR_SUFFIX).name for name in wanted])
        for name in names:
            relative = f"{label}/{name}"
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES and not name.startswith("."):
                text, problem = captions[Path(name).with_suffix(SIDECAR_SUFFIX).name]
                row = _raw_row(index, relative, {"text": text, "image": relative, "label": label})
                if problem and row["reason"] is None:
                    row["reason"], row["detail"] = Reason.TEXT_INVALID.value, problem
                yield row
                index += 1
            elif suffix == SIDECAR_SUFFIX and Path(name).stem in images:
                continue
            else:
                source.ignored.append(f"{relative} (not an image{' or sidecar' if suffix == SIDECAR_SUFFIX else ''})")


def _unlabelled_image(source: RawSource, index: int, name: str) -> dict[str, Any]:
    """A top-level image of a tree being scored, with its sidecar caption (a local tree's; "" in a bucket)."""
    text, problem = ("", None) if source.bucket is not None else _read_sidecar(
        source.path / Path(name).with_suffix(SIDECAR_SUFFIX).name, source.root)
    row = _raw_row(index, name, {"text": text, "image": name})
    if problem and row["reason"] is None:
        row["reason"], row["detail"] = Reason.TEXT_INVALID.value, problem
    return row


def _tree(source: RawSource) -> Iterator[tuple[str, list[str] | None]]:
    """(top-level name, the names inside it sorted, or None for a file) in name order."""
    if source.bucket is not None:
        yield from tree_of(source.bucket.objects).items()
        return
    for entry in sorted(os.scandir(source.path), key=lambda entry: entry.name):
        yield entry.name, sorted(os.listdir(entry.path)) if entry.is_dir() else None


def _sidecars(source: RawSource, label: str, names: list[str]) -> dict[str, tuple[str, str | None]]:
    """Each sidecar name's text ("" when there is none) and a problem, if it cannot be used."""
    if source.bucket is None:
        return {name: _read_sidecar(source.path / label / name, source.root) for name in names}
    present = [name for name in names if f"{label}/{name}" in source.bucket.objects]
    found = read_small_objects(source.bucket.location, [f"{label}/{name}" for name in present], MAX_SIDECAR_BYTES)
    captions = dict.fromkeys(names, ("", None))
    for name in present:
        data = found[f"{label}/{name}"]
        captions[name] = (_sidecar_text(data), None) if isinstance(data, bytes) else (
            "", f"sidecar {name} cannot be read: {data}")
    return captions


def _read_sidecar(path: Path, root: Path) -> tuple[str, str | None]:
    """The sidecar's text ("" when there is none) and a problem, if it cannot be used."""
    if not os.path.lexists(path):
        return "", None
    if not Path(os.path.realpath(path)).is_relative_to(root):
        return "", f"sidecar {path.name} resolves outside the source root"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would wait for a writer forever
            return "", f"sidecar {path.name} is not a regular file"
        with open(path, "rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES)
    except OSError as error:
        return "", f"sidecar {path.name} cannot be read: {error.strerror or error}"
    return _sidecar_text(data), None


def _sidecar_text(data: bytes) -> str:
    text = data.decode("utf-8-sig", errors="surrogateescape")
    if len(data) == MAX_SIDECAR_BYTES:
        text = text.rstrip("".join(chr(code) for code in range(0xDC80, 0xDD00)))  # a character cut at the limit
    return text
