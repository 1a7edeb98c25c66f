"""Finalize an ingest: processed chunks in, deduplicated shards + quarantine + dataset.json out.

Finalizing is where rows meet each other: a repeated (image, text) pair with the same label is
dropped and counted as a duplicate (whatever its id), content seen with two labels is
quarantined as `label_conflict`, an id reused for other content as `id_conflict`. Every row
read ends up in exactly one of: a shard, the quarantine, the duplicates.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import mmpipe
from mmpipe.config import SPLITS, Config
from mmpipe.errors import DataDirError
from mmpipe.files import sha256_file, stable_hash
from mmpipe.ingest.chunks import ChunkPlan, ChunkResult, code_fingerprint
from mmpipe.ingest.reasons import Reason
from mmpipe.ingest.schema import QUARANTINE_SCHEMA, quarantine_rows, shard_schema
from mmpipe.ingest.shards import ShardWriter
from mmpipe.ingest.sources import RawSource
from mmpipe.ingest.version import QUARANTINE_DIR, SHARDS_DIR, DataFile, DatasetVersion, load_dataset

EXAMPLES_PER_REASON = 5
# Per-row bytes besides the pixels, for sizing shards; text dominates and is compressed.
ROW_OVERHEAD_BYTES = 256
_CONFLICT = object()


def inputs_key(plans: list[ChunkPlan], config: Config) -> str:
    """Identity of an ingest's inputs: equal keys give the same dataset version."""
    return stable_hash([[plan.key, plan.raw_path.name] for plan in plans] + [config.ingest_hash()], 24)


def reusable_dataset(data_dir: Path, key: str) -> DatasetVersion | None:
    """The existing dataset when it was built from exactly these inputs and its files are intact."""
    try:
        existing = load_dataset(data_dir)
    except DataDirError:
        return None
    files = existing.shards + existing.quarantine
    if existing.inputs_key != key or not all(_unchanged(existing.path_of(entry), entry) for entry in files):
        return None
    return existing


def _unchanged(path: Path, entry: DataFile) -> bool:
    """The file is still the one written: same size and mtime (else same sha256, e.g. after a copy)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if (stat.st_size, stat.st_mtime_ns) == (entry.bytes, entry.mtime_ns):
        return True
    return stat.st_size == entry.bytes and sha256_file(path) == entry.sha256


def finalize_dataset(
    plans: list[ChunkPlan],
    results: list[ChunkResult],
    source: RawSource,
    data_dir: Path,
    config: Config,
    timings: dict[str, float],
) -> DatasetVersion:
    """Deduplicate, write shards and quarantine, then dataset.json (last, atomically).

    Earlier output stays valid until the new dataset.json replaces the old one; files the new
    version does not reference are removed only after that.
    """
    started = time.perf_counter()
    results = sorted(results, key=lambda result: result.index)
    labels_by_content = _labels_by_content(results)
    size = config.image.size
    rows_per_shard = int(config.ingest.shard_target_mb * 2**20) // (size * size * 3 + ROW_OVERHEAD_BYTES)
    tally = _Tally()
    with contextlib.ExitStack() as stack:
        writers = {
            split: stack.enter_context(
                ShardWriter(data_dir / SHARDS_DIR, split, shard_schema(size), rows_per_shard, data_dir)
            )
            for split in SPLITS
        }
        quarantine = stack.enter_context(
            ShardWriter(data_dir / QUARANTINE_DIR, "quarantine", QUARANTINE_SCHEMA, 10 * rows_per_shard, data_dir)
        )
        for plan, result in zip(plans, results, strict=True):
            chunk = pq.read_table(result.path)
            locators = pq.read_table(plan.raw_path, columns=["row", "source"])
            accepted, rejected, reasons, details = tally.judge(chunk, locators, labels_by_content)
            if accepted:
                rows = chunk.take(accepted).append_column("source", locators["source"].take(accepted))
                for split in SPLITS:
                    mask = pc.equal(rows["split"], split)
                    if pc.any(mask).as_py():
                        writers[split].write(rows.filter(mask))
            if rejected:
                picked = chunk.take(rejected)
                picked = picked.set_column(picked.schema.get_field_index("reason"), "reason", pa.array(reasons))
                picked = picked.set_column(picked.schema.get_field_index("detail"), "detail", pa.array(details))
                quarantine.write(quarantine_rows(picked, locators.take(rejected)))
    shard_files = [file for split in SPLITS for file in writers[split].files]
    timings = {**timings, "finalize_s": round(time.perf_counter() - started, 3)}
    timings["total_s"] = round(sum(timings.values()), 3)
    content = {split: writers[split].content for split in SPLITS}
    version = _version(plans, results, source, data_dir, config, tally, shard_files, quarantine.files, timings,
                       content)
    version.save()
    remove_unreferenced(data_dir, {file.path for file in (*shard_files, *quarantine.files)})
    return version


def _labels_by_content(results: list[ChunkResult]) -> dict[str, Any]:
    """content_key -> its label, or the set of labels when the same content has several."""
    labels: dict[str, Any] = {}
    for result in results:
        table = pq.read_table(result.path, columns=["content_key", "label", "reason"])
        for key, label, reason in zip(*(table[name].to_pylist() for name in table.column_names), strict=True):
            if reason is not None:
                continue
            known = labels.setdefault(key, label)
            if isinstance(known, set):
                known.add(label)
            elif known != label:
                labels[key] = {known, label}
    return labels


class _Tally:
    """Cross-chunk state of one finalize: ids and rows seen, and every count the manifest reports."""

    def __init__(self) -> None:
        self.seen_contents: set[str] = set()  # content keys (cleaned text + image sha256) accepted
        self.id_sources: dict[str, str] = {}
        self.rows_read = 0
        self.duplicates = 0
        self.truncated = 0
        self.quarantined: Counter[str] = Counter()
        self.examples: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.counts: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}

    def judge(self, chunk: pa.Table, locators: pa.Table, labels_by_content: dict[str, Any]):
        """Split a chunk's row indices into accepted and quarantined (with reasons), counting as it goes."""
        accepted: list[int] = []
        rejected: list[int] = []
        reasons: list[str] = []
        details: list[str] = []
        columns = {name: chunk[name].to_pylist() for name in ("id", "label", "split", "content_key",
                                                              "reason", "detail", "text_truncated")}
        sources = locators["source"].to_pylist()
        for index in range(chunk.num_rows):
            self.rows_read += 1
            reason, detail = columns["reason"][index], columns["detail"][index]
            row_id, key, label = columns["id"][index], columns["content_key"][index], columns["label"][index]
            if reason is None:
                reason, detail = self._label_conflict(key, labels_by_content)
            # The (image, text) pair is the unit of uniqueness: the same pair again, under any id,
            # is a duplicate (it would only weigh twice in training, or leak across splits).
            if reason is None and key in self.seen_contents:
                self.duplicates += 1
                continue
            if reason is None and row_id in self.id_sources:
                reason = Reason.ID_CONFLICT.value
                detail = f"id {row_id!r} is already used by {self.id_sources[row_id]} with other content"
            if reason is not None:
                rejected.append(index)
                reasons.append(reason)
                details.append(detail)
                self.quarantined[reason] += 1
                if len(self.examples[reason]) < EXAMPLES_PER_REASON:
                    self.examples[reason].append({"id": row_id, "source": sources[index], "detail": detail})
                continue
            self.seen_contents.add(key)
            self.id_sources[row_id] = sources[index]
            self.counts[columns["split"][index]][label] += 1
            self.truncated += bool(columns["text_truncated"][index])
            accepted.append(index)
        return accepted, rejected, reasons, details

    @staticmethod
    def _label_conflict(key, labels_by_content) -> tuple[str | None, str | None]:
        labels = labels_by_content[key]
        if isinstance(labels, set):
            shown = ", ".join(repr(name) for name in sorted(labels))
            return Reason.LABEL_CONFLICT.value, f"the same text and image are labelled {shown}"
        return None, None


def _version(plans, results, source, data_dir, config, tally, shard_files, quarantine_files, timings, content
             ) -> DatasetVersion:
    classes = list(config.ingest.classes) if config.ingest.classes is not None else sorted(
        {label for counts in tally.counts.values() for label in counts}
    )
    shards = list(shard_files)
    accepted = sum(sum(counts.values()) for counts in tally.counts.values())
    # Named by the rows' values per split, not the shard files' bytes: a pyarrow upgrade that writes the same rows
    # as other bytes keeps the version (and every run, validation and drift reference tied to it).
    version = stable_hash({"rows": content, "config": config.ingest_hash()}, 16)
    ignored = source.ignored
    return DatasetVersion(data_dir=data_dir, **{
        "dataset_version": version,
        "inputs_key": inputs_key(plans, config),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source.describe(),
        "config": config.ingest_settings(),
        "config_hash": config.ingest_hash(),
        "image_shape": [config.image.size, config.image.size, 3],
        "classes": classes,
        "rows_read": tally.rows_read,
        "accepted": accepted,
        "duplicates": tally.duplicates,
        "quarantined": dict(sorted(tally.quarantined.items())),
        "splits": {split: sum(tally.counts[split].values()) for split in SPLITS},
        "counts": {split: {name: tally.counts[split][name] for name in classes} for split in SPLITS},
        "text_truncated": tally.truncated,
        "ignored_files": {"count": len(ignored), "examples": ignored[:EXAMPLES_PER_REASON * 2]},
        "reject_examples": dict(sorted(tally.examples.items())),
        "shards": shards,
        "quarantine": list(quarantine_files),
        "chunks": {"total": len(results), "cached": sum(result.cached for result in results)},
        "timings": timings,
        "lineage": {"code_version": mmpipe.__version__, "code_fingerprint": code_fingerprint(),
                    "python": platform.python_version(), "pyarrow": pa.__version__, "pillow": _pillow_version()},
    })


def _pillow_version() -> str:
    import PIL

    return PIL.__version__


def remove_unreferenced(data_dir: Path, keep: set[str]) -> None:
    """Delete the shard and quarantine files no version lists: the previous version's, once a new one is current
    (also when the ingest that made it current was killed before it could delete them)."""
    for folder in (SHARDS_DIR, QUARANTINE_DIR):
        for path in (data_dir / folder).glob("*.parquet"):
            if str(path.relative_to(data_dir)) not in keep:
                path.unlink(missing_ok=True)

