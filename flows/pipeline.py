"""The pipeline: ingest -> validate -> train -> evaluate -> promote, each stage its own subflow run.

A critical data-contract failure ends the run in `validate`, before any training, with a Failed
state whose message names the expectation; the other stages' results come back as the return
value and as the `pipeline-summary` artifact, and every stage publishes its own artifacts.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from flows.artifacts import PIPELINE_SUMMARY, artifact_key
from flows.environment import load_storage_secret
from flows.evaluate import evaluate_flow
from flows.ingest import run_ingest
from flows.progress import stage
from flows.train import train_flow
from flows.validate import validate_flow
from mmpipe.config import Config
from mmpipe.files import hold_lock
from mmpipe.ingest.watch import complete_pending, pending_change
from mmpipe.storage.mirror import on_local_disk, published
from mmpipe.wording import counted

# In the data dir: held for a whole pipeline run, so a scheduled and a triggered run never overlap.
PIPELINE_LOCK = ".pipeline.lock"


@flow(name="pipeline", flow_run_name="pipeline {source}")
def pipeline_flow(source: str, config: Config) -> dict:
    """Raw source in; a validated dataset version, a trained and evaluated run, a promotion decision out."""
    watching = config.data_dir  # where a watcher keeps the source's pending change (the deployment's config)
    started_on = (pending_change(source, watching) or {}).get("fingerprint")
    config = config.for_source(source)
    load_storage_secret(config)
    logger = get_run_logger()
    # A bucket data dir or run store: the stages work on local mirrors, published when the pipeline ends.
    with on_local_disk(config, say=logger.info) as local:
        lock = Path(local.data_dir) / PIPELINE_LOCK
        waiting = lambda: logger.info("another pipeline is running on %s: waiting for it", config.data_dir)  # noqa: E731
        with hold_lock(lock, on_wait=waiting):  # one pipeline per data dir, whichever deployment started it
            summary = _stages(source, local)
    if complete_pending(source, watching, started_on):  # the change the watcher announced is done: not again
        logger.info("the new data in %s is trained on: its change is complete", source)
    return published(summary, local, config)  # names the bucket where it was published, not this machine's mirror


def _stages(source: str, config: Config) -> dict:
    logger = get_run_logger()
    stage("ingesting")
    ingested = run_ingest(source, config)
    version = ingested["dataset_version"]
    _rename_this_run(f"pipeline {Path(source).name} -> {version}")
    logger.info("dataset %s: %d accepted, %d quarantined, %s", version, ingested["accepted"],
                sum(ingested["quarantined"].values()), counted(ingested["duplicates"], "duplicate"))
    stage("validating the contracts")
    validated = validate_flow(str(config.data_dir), config)  # raises on a critical failure: no training
    stage("training")
    trained = train_flow(config)
    stage("evaluating on the test split")
    evaluated = evaluate_flow(trained["run_id"], config)
    summary = {"source": str(source), "dataset_version": version, "ingest": ingested, "validation": validated,
               "run_id": trained["run_id"], "run_dir": trained["run_dir"], "metrics": evaluated["metrics"],
               "baselines": evaluated["baselines"], "heads": evaluated["heads"],
               "promotion": evaluated.get("promotion"), "report": evaluated["report"],
               "tracking": evaluated["tracking"]}
    create_markdown_artifact(key=artifact_key(PIPELINE_SUMMARY, config.data_dir), markdown=summary_markdown(summary),
                             description=f"{Path(source).name}: dataset {version}, run {trained['run_id']}")
    return summary


def summary_markdown(summary: dict) -> str:
    metrics, promotion = summary["metrics"], summary["promotion"] or {}
    verdict = "promoted to champion" if promotion.get("promoted") else "not promoted"
    return "\n".join([
        f"# Pipeline on `{summary['source']}`", "",
        f"* **ingest**: dataset `{summary['dataset_version']}`, {counted(summary['ingest']['accepted'], 'row')} "
        f"accepted, {sum(summary['ingest']['quarantined'].values())} quarantined, "
        f"{counted(summary['ingest']['duplicates'], 'duplicate')}",
        f"* **validate**: passed{', with warnings' if summary['validation'].get('warnings') else ''}"
        + (f" ([validation page]({Path(summary['validation']['page']).as_uri()}))"
           if summary["validation"].get("page") else ""),
        f"* **train**: run `{summary['run_id']}` in `{summary['run_dir']}`",
        f"* **evaluate**: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}",
        f"* **promote**: {verdict}: " + "; ".join(promotion.get("reasons", [])),
        "", f"Report: [{summary['report']}]({Path(summary['report']).as_uri()})",
    ])


def _rename_this_run(name: str) -> None:
    """Show the dataset version in the UI's run name as soon as it is known."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(get_run_context().flow_run.id, name=name)
