"""Mirroring a run to MLflow from the flows, after training and after evaluation: the run's page is
linked from the flow run (an http link the Prefect UI opens), and a server that did not take the run
is a warning in the flow run's log, never a failed flow."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from flows.artifacts import TRACKED_RUN, artifact_key
from flows.progress import stage as announce_stage
from mmpipe.config import Config
from mmpipe.runs.record import RunDir, load_record
from mmpipe.tracking import mirror_run


@task(name="mirror-run", cache_policy=NO_CACHE, persist_result=False)
def mirror_run_task(run_dir: Path, config: Config, stage: str) -> dict | None:
    """Mirror the run where tracking is set; the MLflow run's page and model version, or None."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    if config.tracking.resolved_uri():
        announce_stage("mirroring to MLflow")
    links = {f"prefect.{stage}.flow_run_id": str(flow_run.id), f"prefect.{stage}.flow_run_url": flow_run.ui_url}
    mirrored = mirror_run(run_dir, config, links, warn=logger.warning)
    if mirrored is None:
        return None
    run_id = Path(run_dir).name
    if mirrored.url:
        key = artifact_key(TRACKED_RUN, load_record(RunDir(run_dir)).data_dir)
        create_link_artifact(key=key, link=mirrored.url, link_text=f"MLflow run {run_id}",
                             description=f"Run {run_id} on the MLflow server: metrics, curves, report, model")
    logger.info("run %s mirrored to MLflow: %s", run_id, mirrored.url or mirrored.uri)
    return {"url": mirrored.url, "experiment_id": mirrored.experiment_id, "mlflow_run_id": mirrored.mlflow_run_id,
            "model": mirrored.model_name, "model_version": mirrored.model_version}
