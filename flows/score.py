"""The score flow: new data through a run (default: the champion), drift judged against what it learned.

`plan-scoring` -> `score-chunk` (one mapped task per chunk: ingest's cleaning, then the run's model) ->
`write-scoring`. Publishes the scoring's summary, its drift table and chart; when drift is detected, emits
`mmpipe.drift.detected` (resource: the scored source; payload: the drifted features), which a deployment
trigger can answer with a retraining.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.futures import as_completed

from flows.artifacts import DRIFT_CHART, DRIFT_FEATURES, SCORING_SUMMARY, source_artifact_key
from flows.progress import PROGRESS_EXTRA, stage
from flows.watch import source_resource
from mmpipe.config import Config, ScoreConfig
from mmpipe.errors import ScoringError
from mmpipe.ingest.bucket import BucketLocation
from mmpipe.ingest.chunks import ChunkPlan
from mmpipe.ingest.clean.record import SourceLocation
from mmpipe.ingest.watch import complete_pending, pending_change
from mmpipe.runs.store import read_champion
from mmpipe.score.output import finish_scoring
from mmpipe.score.runner import (
    ScoredChunk,
    ScorePlan,
    ScoreSteps,
    cleaning_workers,
    plan_scoring,
    score_chunk,
    score_source,
)
from mmpipe.wording import counted

DRIFT_DETECTED = "mmpipe.drift.detected"
MODEL_SOURCE_LABEL = "mmpipe.model-source"  # on a drift event's resource: the source the scoring run learned from
# What `mmpipe score --json` prints of a scoring (scoring.json holds more: lineage, shares, timings).
SUMMARY_KEYS = ("run_id", "rows_read", "scored", "quarantined", "unlabelled", "unknown_labels", "predictions",
                "metrics", "drift", "out_dir", "report")


@task(name="plan-scoring", cache_policy=NO_CACHE, persist_result=False)
def plan_scoring_task(source: str, run_dir: Path, config: Config) -> ScorePlan:
    plan = plan_scoring(source, run_dir, config)
    get_run_logger().info("planned %s from %s, scored by run %s", counted(len(plan.chunks), "chunk"),
                          plan.source.describe()["path"], plan.record.run_id)
    return plan


# Takes only its own chunk, never the whole plan (Prefect walks every task's inputs).
@task(name="score-chunk", cache_policy=NO_CACHE, persist_result=False, retries=1, retry_delay_seconds=1)
def score_chunk_task(chunk: ChunkPlan, location: SourceLocation | BucketLocation, cache_dir: Path, run_dir: Path,
                     settings: Config, batch_size: int) -> ScoredChunk:
    return score_chunk(chunk, location, cache_dir, run_dir, settings, batch_size)


@task(name="write-scoring", cache_policy=NO_CACHE, persist_result=False)
def write_scoring_task(plan: ScorePlan, results: list[ScoredChunk], config: Config, process_s: float) -> dict:
    return finish_scoring(plan, results, config, process_s)


def score_chunks_as_tasks(plan: ScorePlan, config: ScoreConfig) -> Iterator[ScoredChunk]:
    """One mapped `score-chunk` task per chunk on the flow's task runner, results as they finish; the cleaning
    on chunk workers (processes for a long scoring: see `cleaning_workers`). Tasks on a Dask cluster clean where
    they run: the workers are handed over in this process's context, which Dask does not carry (nor, as nothing
    is submitted to them, start)."""
    with cleaning_workers(len(plan.chunks), len(os.sched_getaffinity(0))):
        futures = [score_chunk_task.submit(chunk, plan.location, plan.cache_dir, plan.run_dir, plan.settings,
                                           config.batch_size) for chunk in plan.chunks]
        for future in as_completed(futures):
            yield future.result()


TASK_STEPS = ScoreSteps(plan=plan_scoring_task, score=score_chunks_as_tasks, finish=write_scoring_task)


@flow(name="score", flow_run_name="score {source}")
def score_flow(source: str, config: Config, run_id: str | None = None, model_source: str | None = None) -> dict:
    """Score `source` with run `run_id` (default: the champion of `config.runs_dir`, or of `model_source`'s runs
    dir with several `[serve] sources`); publish the summary and the drift; emit `mmpipe.drift.detected` when a
    feature drifted."""
    logger = get_run_logger()
    watching = config.data_dir  # where a watcher keeps the source's pending change (the deployment's config)
    started_on = (pending_change(source, watching) or {}).get("fingerprint")
    if model_source is not None:
        config = config.for_source(model_source)
    runs_dir = Path(config.runs_dir).absolute()
    if run_id is None:
        champion = read_champion(runs_dir)
        if champion is None:
            raise ScoringError(f"no champion in {runs_dir} to score with: pass a RUN_ID (`mmpipe runs list`), or "
                               "evaluate a run first")
        run_id = champion["run_id"]
    if not (runs_dir / run_id).is_dir():
        raise ScoringError(f"no run {run_id} in {runs_dir} (`mmpipe runs list` shows the runs)")
    progress: list = []

    def report(done: int, total: int, result: ScoredChunk) -> None:
        if not progress:
            progress.append(create_progress_artifact(progress=0.0, description=f"Scoring {counted(total, 'chunk')}"))
        update_progress_artifact(progress[0], progress=100.0 * done / total)
        logger.info("chunk %d/%d: %s scored of %d%s", done, total, result.scored, result.rows,
                    " (cached)" if result.cached else "", extra={PROGRESS_EXTRA: (done, total, "scoring chunks")})

    stage("reading the source")
    scoring = score_source(source, runs_dir / run_id, config, TASK_STEPS, on_chunk=report)
    publish_scoring(source, scoring)
    drift = scoring["drift"]
    drifted = {name: found for name, found in drift["features"].items() if found["drifted"]}
    slices = {name: sorted(value for value, verdict in values.items() if verdict["detected"])
              for name, values in (drift.get("slices") or {}).items()}
    slices = {name: values for name, values in slices.items() if values}
    if drift["detected"]:
        emit_event(event=DRIFT_DETECTED, resource=drift_resource(source, runs_dir / run_id),
                   payload={"source": str(source), "run_id": run_id, "scoring": scoring["version"],
                            "out_dir": scoring["out_dir"], "features": drifted, "slices": slices})
        logger.warning("drift detected in %s: %s -> emitted %s", source, drift["note"], DRIFT_DETECTED)
    complete_pending(source, watching, started_on)
    logger.info("scored %d of %d rows with run %s (%s); %s; predictions %s", scoring["scored"], scoring["rows_read"],
                run_id, "reused" if scoring["reused"] else "new", drift["note"], scoring["predictions"][0])
    return summary_of(scoring)


def drift_resource(source: str, run_dir: Path) -> dict[str, str]:
    """The scored source, labelled with the source the scoring run learned from (`mmpipe.model-source`): what a
    `retrain_on = "drift"` trigger matches, to retrain that source."""
    from mmpipe.ingest.version import recorded_source
    from mmpipe.runs.record import RunDir, load_record

    resource = source_resource(source, "score")
    trained_on = recorded_source(load_record(RunDir(run_dir)).data_dir)
    return {**resource, MODEL_SOURCE_LABEL: trained_on} if trained_on else resource


def summary_of(scoring: dict) -> dict:
    """What `mmpipe score --json` prints: the drift per feature as its statistic, threshold and verdict."""
    summary = {key: scoring[key] for key in SUMMARY_KEYS}
    drift = scoring["drift"]
    summary["drift"] = {"detected": drift["detected"], "note": drift["note"], "features": _brief(drift["features"]),
                        "slices": {name: {value: {"detected": verdict["detected"],
                                                  "features": _brief(verdict["features"])}
                                          for value, verdict in values.items()}
                                   for name, values in (drift.get("slices") or {}).items()}}
    return summary


def _brief(features: dict) -> dict:
    return {name: {key: found[key] for key in ("statistic", "threshold", "drifted")}
            for name, found in features.items()}


def publish_scoring(source: str, scoring: dict) -> None:
    """The summary (markdown), the drift per feature (table) and the drift chart (image) on the flow run."""
    from mmpipe.score.report import DRIFT_CHART_FILE

    key = partial(source_artifact_key, source=source)
    quarantined = sum(scoring["quarantined"].values())
    metrics = scoring["metrics"]
    lines = [f"# Scoring `{scoring['version']}` of `{source}` with run `{scoring['run_id']}`", "",
             f"{counted(scoring['rows_read'], 'row')} read: {scoring['scored']} scored, {quarantined} quarantined"
             + "".join(f"; {reason} {count}" for reason, count in scoring["quarantined"].items()) + ".", "",
             f"Drift: **{'detected' if scoring['drift']['detected'] else 'none'}** ({scoring['drift']['note']}).", "",
             (f"On {counted(metrics['rows'], 'labelled row')}: accuracy {metrics['accuracy']:.4f}, macro F1 "
              f"{metrics['macro_f1']:.4f}." if metrics else "No row had a label the model knows: no metrics."), "",
             f"Predictions: `{scoring['predictions'][0]}`; report: `{scoring['report']}`."]
    create_markdown_artifact(key=key(SCORING_SUMMARY), markdown="\n".join(lines),
                             description=f"{Path(str(source)).name}: scored by run {scoring['run_id']}")
    features = scoring["drift"]["features"]
    if features:
        create_table_artifact(key=key(DRIFT_FEATURES), description="Drift per feature against the training data",
                              table=[{"feature": name, "test": found["test"], "statistic": found["statistic"],
                                      "threshold": found["threshold"], "p_value": found["p_value"],
                                      "drifted": found["drifted"]} for name, found in features.items()])
        chart = Path(scoring["out_dir"]) / DRIFT_CHART_FILE
        if chart.is_file():
            png = base64.b64encode(chart.read_bytes()).decode()
            create_image_artifact(key=key(DRIFT_CHART), image_url=f"data:image/png;base64,{png}",
                                  description="The training data beside the scored rows, feature by feature")


def run_score(source: str | Path, config: Config, run_id: str | None = None) -> dict:
    """Run the flow: chunk tasks on `config.ingest.workers` threads, or on the Dask cluster at
    `config.ingest.dask_address`."""
    if config.ingest.dask_address:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=config.ingest.dask_address)
    else:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=config.ingest.worker_count())
    return score_flow.with_options(task_runner=runner)(str(source), config, run_id)
