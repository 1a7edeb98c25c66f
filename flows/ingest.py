"""The ingest flow: plan the source into chunks, clean chunks as mapped tasks, finalize the dataset.

The core driver (mmpipe.ingest.runner.ingest) runs with these tasks as its steps. Caching lives
in the data dir (chunk results keyed by content fingerprint + settings + code), so the tasks
themselves use no Prefect cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.artifacts import INGEST_COUNTS, INGEST_REJECTS, INGEST_SUMMARY, artifact_key
from flows.progress import PROGRESS_EXTRA
from mmpipe.config import SPLITS, Config
from mmpipe.ingest.bucket import BucketLocation
from mmpipe.ingest.chunks import ChunkPlan, ChunkResult
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.runner import IngestPlan, IngestSteps, finish_ingest, ingest, plan_ingest
from mmpipe.ingest.version import DatasetVersion
from mmpipe.ingest.workers import chunk_workers, clean_chunk, handing_chunks_to
from mmpipe.wording import counted


@task(name="plan-chunks", cache_policy=NO_CACHE, persist_result=False)
def plan_chunks_task(source: str, config: Config) -> IngestPlan:
    plan = plan_ingest(source, config)
    reused = f"; source and settings unchanged: reusing dataset {plan.reusable.version}" if plan.reusable else ""
    get_run_logger().info("planned %s from %s%s", counted(len(plan.chunks), "chunk"), plan.source.describe()["path"],
                          reused)
    return plan


# Takes only its own chunk, never the whole plan: Prefect walks every task's inputs, and a plan
# with thousands of chunks passed to thousands of tasks would make that quadratic.
@task(name="clean-chunk", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=1)
def clean_chunk_task(chunk: ChunkPlan, location: SourceLocation | BucketLocation, cache_dir: Path,
                     config: Config) -> ChunkResult:
    # On the flow's worker processes when it has them (see clean_chunks_as_tasks), else right here: a
    # thread of the task runner, or a Dask worker. Nothing here may refer to a flow-local object:
    # Dask pickles this function by value.
    return clean_chunk(chunk, location, config, cache_dir)


@task(name="write-dataset", cache_policy=NO_CACHE, persist_result=False)
def write_dataset_task(plan: IngestPlan, results: list[ChunkResult], config: Config, process_s: float):
    return finish_ingest(plan, results, config, process_s)


def clean_chunks_as_tasks(plan: IngestPlan, config: Config) -> Iterator[ChunkResult]:
    """One mapped `clean-chunk` task per chunk on the flow's task runner, results as they finish;
    with `ingest.parallel = "processes"`, the row work on worker processes (not when the chunks go to Dask)."""
    count = min(config.ingest.worker_count(), len(plan.chunks))
    if config.ingest.dask_address or config.ingest.parallel == "threads" or count <= 1:
        yield from _map_chunks(plan, config)
        return
    with chunk_workers(count, "processes") as workers, handing_chunks_to(workers):
        yield from _map_chunks(plan, config)


def _map_chunks(plan: IngestPlan, config: Config) -> Iterator[ChunkResult]:
    futures = [clean_chunk_task.submit(chunk, plan.location, plan.cache_dir, config) for chunk in plan.chunks]
    for future in as_completed(futures):
        yield future.result()


TASK_STEPS = IngestSteps(plan=plan_chunks_task, clean=clean_chunks_as_tasks, finish=write_dataset_task)


@flow(name="ingest", flow_run_name="ingest {source}")
def ingest_flow(source: str, config: Config) -> dict:
    """Raw source -> cleaned, deduplicated, split Parquet shards + quarantine + dataset.json."""
    logger = get_run_logger()
    progress: list = []

    def report(done: int, total: int, result: ChunkResult) -> None:
        if not progress:
            progress.append(create_progress_artifact(progress=0.0, description=f"Cleaning {counted(total, 'chunk')}"))
        update_progress_artifact(progress[0], progress=100.0 * done / total)
        logger.info("chunk %d/%d: %s, %d rejected%s", done, total, counted(result.rows, "row"), result.rejected,
                    " (cached)" if result.cached else "", extra={PROGRESS_EXTRA: (done, total, "cleaning chunks")})

    version = ingest(source, config, TASK_STEPS, on_chunk=report)
    publish_ingest_artifacts(version)
    return version.summary()


def publish_ingest_artifacts(version: DatasetVersion) -> None:
    """Summary (markdown), counts per split x class and rejects per reason (tables) on the flow run."""
    key = partial(artifact_key, data_dir=version.data_dir)
    create_markdown_artifact(key=key(INGEST_SUMMARY), markdown=version.to_markdown(), description="Ingest summary")
    counts = [{"class": name, **{split: version.counts[split].get(name, 0) for split in SPLITS}}
              for name in version.classes]
    create_table_artifact(key=key(INGEST_COUNTS), table=counts, description="Accepted rows by class and split")
    rejects = [{"reason": reason, "rows": count,
                "example": (version.reject_examples.get(reason) or [{}])[0].get("source", "")}
               for reason, count in version.quarantined.items()]
    create_table_artifact(key=key(INGEST_REJECTS), table=rejects or [{"reason": "none", "rows": 0, "example": ""}],
                          description="Quarantined rows by reason")


def run_ingest(source: str | Path, config: Config) -> dict:
    """Run the flow: chunk tasks on `config.ingest.workers` threads, or on the Dask cluster at
    `config.ingest.dask_address` (same shards either way: results are gathered in chunk order)."""
    if config.ingest.dask_address:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=config.ingest.dask_address)
    else:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=config.ingest.worker_count())
    return ingest_flow.with_options(task_runner=runner)(str(source), config)
