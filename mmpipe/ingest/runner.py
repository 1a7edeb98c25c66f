"""Ingest without an orchestrator: plan -> process chunks in parallel -> finalize.

flows/ingest.py runs the same three steps as Prefect tasks; this runner is for notebooks,
benchmarks and tests of the core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from mmpipe.config import Config
from mmpipe.errors import DataDirError
from mmpipe.files import stable_hash
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
from mmpipe.ingest.finalize import finalize_dataset, inputs_key, reusable_dataset
from mmpipe.ingest.sources import RawSource, open_source
from mmpipe.ingest.version import DatasetVersion

Progress = Callable[[int, int], None]


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
    def location(self) -> SourceLocation:
        return SourceLocation(base_dir=self.source.base_dir, root=self.source.root)


def plan_ingest(source: str | Path, config: Config) -> IngestPlan:
    """Open and stream the source into staged, fingerprinted chunks (raises SourceError if unusable)."""
    started = time.perf_counter()
    raw_source = open_source(source)
    data_dir = Path(config.data_dir).absolute()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir} is a file; pass a folder with --data")
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
        return plan.reusable
    timings = {"plan_s": plan.plan_s, "process_s": round(process_s, 3)}
    version = finalize_dataset(plan.chunks, results, plan.source, plan.data_dir, config, timings)
    prune_cache(plan.cache_dir, plan.chunks)
    return version


def ingest(source: str | Path, config: Config, on_progress: Progress | None = None) -> DatasetVersion:
    """Run a whole ingest in this process with `config.ingest.workers` threads (0: one per core).

    Pillow, hashlib and Arrow release the GIL for the heavy work, so threads scale on the cores.
    """
    plan = plan_ingest(source, config)
    started = time.perf_counter()
    results: list[ChunkResult] = []
    if plan.reusable is None:
        workers = config.ingest.workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(process_chunk, chunk, plan.location, config, plan.cache_dir) for chunk in plan.chunks
            ]
            for done, future in enumerate(as_completed(futures), start=1):
                results.append(future.result())
                if on_progress is not None:
                    on_progress(done, len(futures))
    return finish_ingest(plan, results, config, time.perf_counter() - started)
