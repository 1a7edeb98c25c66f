"""The dataset version: dataset.json, the typed record of one finished ingest, and the data dir's layout.

Every stage that reads a data dir asks this module: the file names (dataset.json, shards/,
quarantine/), the classes, the shards of a split, the settings the dataset was built with. The
record is versioned (`format`); older formats are read and migrated here, and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmpipe.config import SPLITS, Config, ImageConfig, TextConfig
from mmpipe.errors import DataDirError
from mmpipe.files import hold_lock, read_record, remove_stale_temporaries, sha256_file, write_json_atomic
from mmpipe.wording import counted

DATASET_FILE = "dataset.json"
SHARDS_DIR = "shards"
QUARANTINE_DIR = "quarantine"
# Held by every command that writes the data dir (exclusively) or reads its shards (shared).
LOCK_FILE = ".lock"
# Stale files (of a shard re-hashed after its mtime changed): path -> bytes, mtime_ns, sha256; and under
# "dataset.json", the sha256 of the dataset.json whose recorded shard hashes may be trusted.
FILE_HASHES = "cache/files.json"
# 2: shard entries carry mtime_ns (so readers re-check files cheaply). 1 had none: read as unknown.
FORMAT_VERSION = 2


class DataFile(BaseModel):
    """One shard or quarantine file as written: path (relative to the data dir), sha256, rows, size, mtime."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    rows: int
    bytes: int
    mtime_ns: int | None = None
    split: str | None = None  # shards only


class DatasetVersion(BaseModel):
    """A finished dataset: what DATA/dataset.json says, with the data dir it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT_VERSION
    dataset_version: str
    inputs_key: str
    created_at: str
    source: dict[str, Any]
    config: dict[str, Any] = Field(description="the ingest settings it was built with: text, image, ingest")
    config_hash: str
    image_shape: tuple[int, int, int]
    classes: list[str]
    rows_read: int
    accepted: int
    duplicates: int
    quarantined: dict[str, int]
    splits: dict[str, int]
    counts: dict[str, dict[str, int]]
    text_truncated: int
    ignored_files: dict[str, Any]
    reject_examples: dict[str, list[dict[str, str]]]
    shards: list[DataFile]
    quarantine: list[DataFile]
    chunks: dict[str, int]
    timings: dict[str, float]
    lineage: dict[str, Any]
    data_dir: Path = Field(exclude=True)

    @property
    def version(self) -> str:
        return self.dataset_version

    @property
    def image_size(self) -> int:
        """S of the stored S x S x 3 images."""
        return self.image_shape[0]

    @property
    def text_config(self) -> TextConfig:
        """How the text was cleaned (serving repeats it)."""
        return TextConfig(**self.config["text"])

    @property
    def image_config(self) -> ImageConfig:
        """How the images were standardized (serving repeats it)."""
        return ImageConfig(**self.config["image"])

    def built_with(self, config: Config) -> Config:
        """`config` with the text, image and ingest settings this dataset was built with: later stages
        judge and reproduce data by how it was made, not by today's settings."""
        return config.model_validate({**config.model_dump(mode="json"), **self.config})

    def shards_of(self, split: str) -> list[DataFile]:
        return [entry for entry in self.shards if entry.split == split]

    def rows_of(self, split: str) -> int:
        return sum(entry.rows for entry in self.shards_of(split))

    def path_of(self, entry: DataFile) -> Path:
        return self.data_dir / entry.path

    def current_shard_hashes(self) -> dict[str, str]:
        """Each listed shard's sha256 as the file is now: the recorded one while its size and mtime are
        unchanged, else hashed again (remembered in cache/files.json until the file changes again).

        Raises DataDirError naming a listed shard that is missing.
        """
        cache_path, cache = self.data_dir / FILE_HASHES, _file_hashes(self.data_dir)
        # The recorded hashes are trusted only in the dataset.json that ingest wrote: an edited record (a
        # hash changed by hand, size and mtime left alone) has every shard checked against its file again.
        record = sha256_file(self.data_dir / DATASET_FILE)
        trusted = cache.get(DATASET_FILE) == record
        hashes: dict[str, str] = {}
        rehashed = not trusted
        cache[DATASET_FILE] = record
        for entry in self.shards:
            try:
                stat = self.path_of(entry).stat()
            except FileNotFoundError:
                raise DataDirError(f"shard {entry.path} listed in {self.data_dir / DATASET_FILE} is missing; "
                                   f"re-run `mmpipe ingest` to rebuild the dataset") from None
            stamp, cached = (stat.st_size, stat.st_mtime_ns), cache.get(entry.path, {})
            if trusted and stamp == (entry.bytes, entry.mtime_ns):
                hashes[entry.path] = entry.sha256
            elif stamp == (cached.get("bytes"), cached.get("mtime_ns")):
                hashes[entry.path] = cached["sha256"]
            else:
                hashes[entry.path] = sha256_file(self.path_of(entry))
                cache[entry.path] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hashes[entry.path]}
                rehashed = True
        if rehashed:
            write_json_atomic(cache_path, cache, pretty=False)
        return hashes

    def changed_shards(self) -> list[str]:
        """The listed shards whose content is no longer what ingest wrote (DataDirError if one is missing)."""
        current = self.current_shard_hashes()
        return [entry.path for entry in self.shards if current[entry.path] != entry.sha256]

    def save(self) -> None:
        """Write dataset.json atomically (written last by an ingest: it is what makes a version current)."""
        write_json_atomic(self.data_dir / DATASET_FILE, self.model_dump(mode="json"))
        _trust_record(self.data_dir)

    def summary(self) -> dict[str, Any]:
        """The object `mmpipe ingest --json` prints."""
        return {"dataset_version": self.version, "rows_read": self.rows_read, "accepted": self.accepted,
                "duplicates": self.duplicates, "quarantined": self.quarantined, "splits": self.splits,
                "classes": self.classes, "data_dir": str(self.data_dir)}

    def to_markdown(self) -> str:
        """A human summary: counts, splits x classes, rejects by reason with examples."""
        lines = [
            f"# Ingest summary: dataset `{self.version}`",
            "",
            f"Source `{self.source['path']}` ({self.source['kind']}) into `{self.data_dir}`.",
            "",
            "| rows read | accepted | quarantined | duplicates | ignored files | text truncated |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {self.rows_read} | {self.accepted} | {sum(self.quarantined.values())} | {self.duplicates} "
            f"| {self.ignored_files['count']} | {self.text_truncated} |",
            "",
            "## Accepted rows by split and class",
            "",
            "| class | " + " | ".join(SPLITS) + " |",
            "|---|" + "---:|" * len(SPLITS),
        ]
        for name in self.classes:
            lines.append(f"| {name} | " + " | ".join(str(self.counts[split].get(name, 0)) for split in SPLITS) + " |")
        lines += ["", "## Quarantined rows by reason", ""]
        if not self.quarantined:
            lines.append("None: every row was accepted or an exact duplicate.")
        for reason, count in sorted(self.quarantined.items(), key=lambda item: -item[1]):
            lines.append(f"- **{reason}**: {count}")
            for example in self.reject_examples.get(reason, []):
                lines.append(f"  - `{example['source']}` (id `{example['id']}`): {example['detail']}")
        lines += ["", f"Chunks: {self.chunks['total']} ({self.chunks['cached']} reused from cache). "
                  f"Time: {self.timings['total_s']:.1f} s. Config hash `{self.config_hash}`."]
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, *, shared: bool = False, create: bool = False) -> Iterator[None]:
    """Hold the data dir: exclusively to write it (ingest, validate, contracts), shared to read its
    shards (train, evaluate), so a version is never replaced under a reader and two writers never
    mix. Whoever has to wait says so. A writer removes the temporary files killed writers left.
    Only ingest `create`s a data dir; for everyone else a missing one is a DataDirError."""
    data_dir = Path(data_dir)

    def waiting() -> None:
        logging.getLogger(__name__).warning(
            "another mmpipe command is %s %s; waiting for it to finish", "writing" if shared else "using", data_dir)

    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir} is a file; pass a folder with --data")
    if not data_dir.is_dir() and not create:
        raise DataDirError(f"no dataset in {data_dir}: run `mmpipe ingest SOURCE --data {data_dir}` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    with hold_lock(data_dir / LOCK_FILE, on_wait=waiting, shared=shared):
        if not shared:
            removed = remove_stale_temporaries(data_dir)
            if removed:
                logging.getLogger(__name__).info("removed %s an interrupted writer left in %s",
                                                 counted(removed, "temporary file"), data_dir)
        yield


def _trust_record(data_dir: Path) -> None:
    """Note the dataset.json just written as ingest's own, so readers trust its shard hashes while each file's
    size and mtime are unchanged (see `current_shard_hashes`). A kill before this only costs a re-hash."""
    record = sha256_file(data_dir / DATASET_FILE)
    write_json_atomic(data_dir / FILE_HASHES, {**_file_hashes(data_dir), DATASET_FILE: record}, pretty=False)


def _file_hashes(data_dir: Path) -> dict[str, Any]:
    """cache/files.json; empty when missing or damaged (it is only a cache: the files are hashed again)."""
    try:
        cache = json.loads((data_dir / FILE_HASHES).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def recorded_source(data_dir: str | Path) -> str | None:
    """Where the data dir's dataset came from (dataset.json's source path), or None when it does not say."""
    try:
        source = json.loads((Path(data_dir) / DATASET_FILE).read_text())["source"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return source if isinstance(source, str) and source else None


def load_dataset(data_dir: Path) -> DatasetVersion:
    """Read DATA/dataset.json. Raises DataDirError with what to run when it is missing or broken."""
    return read_record(Path(data_dir) / DATASET_FILE, DatasetVersion, FORMAT_VERSION, DataDirError,
                       missing=f"no dataset in {data_dir}: run `mmpipe ingest SOURCE --data {data_dir}` first",
                       fix="re-run `mmpipe ingest` to rebuild it", data_dir=Path(data_dir))
