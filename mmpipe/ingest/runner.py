"""The ingest driver: plan -> clean chunks in parallel -> finalize, whoever runs the steps.

In a notebook, a benchmark or a test it runs them as plain functions, chunks on chunk workers;
flows/ingest.py hands it the same steps as Prefect tasks.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

from mmpipe.config import Config
from mmpipe.errors import DataDirError
from mmpipe.files import stable_hash
from mmpipe.ingest.bucket import BucketLocation
from mmpipe.ingest.chunks import (
    CACHE_DIR,
    ChunkPlan,
    ChunkResult,
    code_fingerprint,
    plan_chunks,
    process_chunk,
    prune_cache,
)
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.finalize import finalize_dataset, inputs_key, remove_unreferenced, reusable_dataset
from mmpipe.ingest.sources import RawSource, open_source
from mmpipe.ingest.version import DatasetVersion, data_dir_lock
from mmpipe.ingest.workers import chunk_workers, worker_deaths
from mmpipe.wording import counted


@dataclass
class IngestPlan:
    """What one ingest will do: the source, its chunks, and whether the current dataset already matches."""

    source: RawSource
    data_dir: Path
    chunks: list[ChunkPlan]
    inputs_key: str
    plan_s: float
    reusable: DatasetVersion | None = field(default=None, repr=False)

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / CACHE_DIR

    @property
    def location(self) -> SourceLocation | BucketLocation:
        return self.source.location()


def plan_ingest(source: str | Path, config: Config) -> IngestPlan:
    """Open and stream the source into staged, fingerprinted chunks (raises SourceError if unusable)."""
    started = time.perf_counter()
    raw_source = open_source(source)
    data_dir = Path(config.data_dir).absolute()
    settings_key = stable_hash([config.ingest_hash(), code_fingerprint()])
    chunks = plan_chunks(raw_source, data_dir / CACHE_DIR, settings_key, config.ingest.chunk_rows)
    key = inputs_key(chunks, config)
    return IngestPlan(
        source=raw_source,
        data_dir=data_dir,
        chunks=chunks,
        inputs_key=key,
        plan_s=round(time.perf_counter() - started, 3),
        reusable=reusable_dataset(data_dir, key),
    )


def finish_ingest(plan: IngestPlan, results: list[ChunkResult], config: Config, process_s: float) -> DatasetVersion:
    """Write the dataset version (or return the existing one when the inputs are unchanged)."""
    if plan.reusable is not None:
        remove_unreferenced(plan.data_dir, {entry.path for entry in (*plan.reusable.shards, *plan.reusable.quarantine)})
        return plan.reusable
    timings = {"plan_s": plan.plan_s, "process_s": round(process_s, 3)}
    version = finalize_dataset(plan.chunks, results, plan.source, plan.data_dir, config, timings)
    prune_cache(plan.cache_dir, plan.chunks)
    return version


ChunkMapper = Callable[[IngestPlan, Config], Iterator[ChunkResult]]


def clean_in_parallel(plan: IngestPlan, config: Config) -> Iterator[ChunkResult]:
    """Clean the plan's chunks on `ingest.workers` chunk workers (see mmpipe.ingest.workers), yielding
    each result as it is done. One worker cleans in this process: nothing to gain from another."""
    count = min(config.ingest.worker_count(), len(plan.chunks))
    if count <= 1:
        for chunk in plan.chunks:
            yield process_chunk(chunk, plan.location, config, plan.cache_dir)
        return
    with chunk_workers(count, config.ingest.parallel) as pool:
        with worker_deaths():
            futures = [pool.submit(process_chunk, chunk, plan.location, config, plan.cache_dir)
                       for chunk in plan.chunks]
        for future in as_completed(futures):
            with worker_deaths():
                result = future.result()
            yield result


@dataclass(frozen=True)
class IngestSteps:
    """How each step of an ingest runs: plain functions in this process by default; flows/ingest.py
    passes Prefect tasks instead (and its task runner decides where chunks are cleaned: threads or Dask)."""

    plan: Callable[[str | Path, Config], IngestPlan] = plan_ingest
    clean: ChunkMapper = clean_in_parallel
    finish: Callable[[IngestPlan, list[ChunkResult], Config, float], DatasetVersion] = finish_ingest


def ingest(source: str | Path, config: Config, steps: IngestSteps = IngestSteps(),
           on_chunk: Callable[[int, int, ChunkResult], None] | None = None) -> DatasetVersion:
    """The one ingest driver: plan -> clean every chunk (unless the inputs are unchanged) -> finalize.

    Args:
        steps: how each step runs (see IngestSteps).
        on_chunk: called as `(done, total, result)` after each chunk, for progress.
    """
    with data_dir_lock(config.data_dir, create=True):  # one writer at a time; readers keep the version they read
        began = time.time_ns()
        try:
            plan = steps.plan(source, config)
            started = time.perf_counter()
            results: list[ChunkResult] = []
            if plan.reusable is None:
                for done, result in enumerate(steps.clean(plan, config), start=1):
                    results.append(result)
                    if on_chunk is not None:
                        on_chunk(done, len(plan.chunks), result)
            return steps.finish(plan, results, config, time.perf_counter() - started)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            removed = _remove_files_written_since(Path(config.data_dir) / CACHE_DIR, began)
            raise DataDirError(f"the disk holding {Path(config.data_dir).absolute()} is full ({error.strerror}): "
                               "free some space and run the ingest again; the previous dataset version is intact "
                               f"({counted(removed, 'cache file')} this ingest wrote removed)") from None


def _remove_files_written_since(folder: Path, since_ns: int) -> int:
    """Delete the files under `folder` modified at or after `since_ns` (this run's partial cache)."""
    removed = 0
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_mtime_ns >= since_ns:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
