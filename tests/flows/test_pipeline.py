"""The pipeline flow end to end against the session's Prefect API: stages, states, artifacts, failure."""

import asyncio
import csv
import json
import logging
import shutil
import threading

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from typer.testing import CliRunner

from flows.artifacts import (
    CONFUSION_MATRIX,
    EVALUATION_REPORT,
    INGEST_SUMMARY,
    PIPELINE_SUMMARY,
    RELIABILITY_DIAGRAM,
    TRAINING_CURVES,
    VALIDATION_REPORT,
    artifact_key,
)
from flows.pipeline import PIPELINE_LOCK, pipeline_flow
from mmpipe.cli import app
from mmpipe.files import hold_lock
from mmpipe.ingest.version import DATASET_FILE
from mmpipe.runs.record import RunDir, load_record
from mmpipe.runs.store import list_runs, read_champion
from tests.fixtures.cli import documented_json_keys
from tests.fixtures.datasets import artifact, run_config


async def stage_runs(parent_id):
    """The parent flow run and every subflow run under it (any depth), with their artifact keys."""
    async with get_client() as client:
        runs, frontier = [await client.read_flow_run(parent_id)], [parent_id]
        while frontier:
            children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
            runs += children
            frontier = [child.id for child in children]
    return runs


def test_pipeline_waits_for_the_data_dir_then_runs_every_stage_and_publishes_their_artifacts(
        prefect_api, sample_manifest, tmp_path):
    """The pipeline itself takes the data dir's lock: while another holder has it, it says so and writes
    nothing; then every stage runs, each publishing its artifact."""
    config = run_config(tmp_path / "data", tmp_path / "runs")
    waiting, outcome = threading.Event(), {}

    class Watch(logging.Handler):
        def emit(self, record):
            if "another pipeline is running" in record.getMessage():
                waiting.set()

    handler = Watch()
    logging.getLogger("prefect.flow_runs").addHandler(handler)
    try:
        with hold_lock(config.data_dir / PIPELINE_LOCK):  # the first pipeline
            thread = threading.Thread(target=lambda: outcome.update(
                state=pipeline_flow(str(sample_manifest), config, return_state=True)))
            thread.start()
            assert waiting.wait(timeout=120), "the second pipeline did not report that it waits"
            assert not (config.data_dir / DATASET_FILE).exists()  # nothing written while the first holds it
        thread.join(timeout=300)
    finally:
        logging.getLogger("prefect.flow_runs").removeHandler(handler)
    state = outcome["state"]
    assert state.is_completed(), state.message
    summary = state.result()
    runs = asyncio.run(stage_runs(state.state_details.flow_run_id))
    assert all(run.state.is_completed() for run in runs)
    assert runs[0].name == f"pipeline {sample_manifest.name} -> {summary['dataset_version']}"
    # Without tracking, the report's charts are image artifacts: nothing of it needs a local file to be seen.
    # Their keys name the source: its history in the UI is its own (the key function is tested on its own).
    keys = {name: artifact_key(name, config.data_dir) for name in (
        INGEST_SUMMARY, VALIDATION_REPORT, EVALUATION_REPORT, PIPELINE_SUMMARY, CONFUSION_MATRIX,
        RELIABILITY_DIAGRAM, TRAINING_CURVES)}
    assert all(key.startswith(f"{name}-{sample_manifest.parent.name}-manifest-csv-") for name, key in keys.items())
    found = {name: found for run in runs for name, key in keys.items()
             if (found := asyncio.run(artifact(run.id, key))) is not None}
    assert set(found) == set(keys)
    assert all(found[name].type == "image" and found[name].data.startswith("data:image/png;base64,")
               for name in (CONFUSION_MATRIX, RELIABILITY_DIAGRAM, TRAINING_CURVES))
    assert summary["tracking"] is None  # no MLFLOW_TRACKING_URI here
    run = RunDir(tmp_path / "runs" / summary["run_id"])
    record = load_record(run)
    assert record.status == "completed" and record.dataset_version == summary["dataset_version"]
    assert run.report.is_file() and summary["report"] == str(run.report)
    assert read_champion(tmp_path / "runs")["run_id"] == summary["run_id"] and summary["promotion"]["promoted"]
    assert set(summary) == documented_json_keys("mmpipe run SOURCE")  # what `mmpipe run --json` prints, as README says
    assert set(summary["heads"]) == {"fused", "text", "image"}


def without_class(manifest, label, folder):
    """A copy of the sample (manifest and images) with every row of one class removed."""
    shutil.copytree(manifest.parent, folder)
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] != label]
    with open(folder / manifest.name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / manifest.name


def with_known_classes_without(label, manifest, tmp_path):
    """A data dir whose source contracts were inferred from the sample without `label`; its config."""
    from mmpipe.contracts.validate import validate_dataset
    from mmpipe.ingest import ingest

    config = run_config(tmp_path / "data", tmp_path / "runs", **{"ingest.classes": None})
    ingest(without_class(manifest, label, tmp_path / "earlier"), config)
    assert validate_dataset(config.data_dir, config).success
    return config


def test_a_critical_contract_failure_stops_before_training(prefect_api, sample_manifest, tmp_path):
    config = with_known_classes_without("moon", sample_manifest, tmp_path)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / "champion.json").write_text(json.dumps({"run_id": "20260101T000000Z-before"}))
    state = pipeline_flow(str(sample_manifest), config, return_state=True)  # the source now has a new class
    assert state.is_failed()
    assert "failed 1 critical expectation: label is a known class" in state.message
    assert "'moon' (" in state.message and "accept-classes" in state.message
    assert [run for run in list_runs(runs_dir) if run["status"] == "completed"] == []
    assert read_champion(runs_dir)["run_id"] == "20260101T000000Z-before"


def test_cli_run_exits_1_with_the_reason_when_contracts_fail(prefect_api, sample_manifest, tmp_path):
    config = with_known_classes_without("moon", sample_manifest, tmp_path)
    toml = tmp_path / "mmpipe.toml"
    toml.write_text("[image]\nsize = 16\n")
    result = CliRunner().invoke(app, ["run", str(sample_manifest), "--data", str(config.data_dir), "--runs",
                                      str(tmp_path / "runs"), "--config", str(toml), "--json"])
    assert result.exit_code == 1 and "nothing was trained" in result.stderr
    assert "label is a known class" in result.stderr and "'moon' (" in result.stderr
    assert list_runs(tmp_path / "runs") == []
