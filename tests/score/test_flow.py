"""`mmpipe score` end to end on a real Prefect API: the champion scores, `--json` is what the README says,
drift is published where people look and emitted as the event a retraining trigger waits for."""

import asyncio
import json
import shutil
import time

import httpx
import pytest

from flows.artifacts import DRIFT_CHART, DRIFT_FEATURES, SCORING_SUMMARY, source_artifact_key
from flows.score import DRIFT_DETECTED
from flows.watch import source_resource
from mmpipe.config import EvaluateConfig
from mmpipe.evaluate import evaluate_run
from mmpipe.runs.store import champion_lock, set_champion
from tests.fixtures.cli import documented_json_keys, run_main
from tests.fixtures.datasets import artifact
from tests.fixtures.files import darkened_copy


def drift_events(source):
    from prefect.settings import get_current_settings

    resource = source_resource(str(source), "score")["prefect.resource.id"]
    body = {"filter": {"event": {"name": [DRIFT_DETECTED]}, "resource": {"id": [resource]}}, "limit": 10}
    response = httpx.post(f"{get_current_settings().api.url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


@pytest.mark.slow
def test_the_champion_scores_and_drift_reaches_the_ui_and_the_event_feed(
        prefect_api, trained_run, sample_manifest, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / trained_run.name)
    evaluate_run(runs / trained_run.name, EvaluateConfig())
    with champion_lock(runs):
        set_champion(runs, {"run_id": trained_run.name})
    dark = darkened_copy(sample_manifest, tmp_path / "dark")
    code, out, err = run_main(["score", str(dark), "--runs", str(runs), "--out", str(tmp_path / "scores"),
                               "--json"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) == documented_json_keys("mmpipe score SOURCE")
    assert summary["run_id"] == trained_run.name  # no RUN_ID: the champion
    assert summary["drift"]["detected"] and summary["drift"]["features"]["brightness"]["drifted"]
    assert set(summary["drift"]["features"]["brightness"]) == {"statistic", "threshold", "drifted"}
    assert summary["rows_read"] == summary["scored"] + sum(summary["quarantined"].values())
    # The event a `retrain_on = "drift"` trigger waits for: resource the scored source, the drifted features.
    deadline = time.monotonic() + 60
    while not (events := drift_events(dark)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert events, "no mmpipe.drift.detected event reached the API"
    assert "brightness" in events[0]["payload"]["features"] and events[0]["payload"]["source"] == str(dark)
    # Published on the flow run, under keys of the scored source: the summary, the table and the chart.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async def score_run():
        async with get_client() as client:
            found = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(
                any_=[f"score {dark}"])))
        return found[0].id

    flow_run = asyncio.run(score_run())
    summary_artifact = asyncio.run(artifact(flow_run, source_artifact_key(SCORING_SUMMARY, dark)))
    assert summary_artifact is not None and "Drift: **detected**" in summary_artifact.data
    table = asyncio.run(artifact(flow_run, source_artifact_key(DRIFT_FEATURES, dark)))
    assert table is not None and "brightness" in str(table.data)
    chart = asyncio.run(artifact(flow_run, source_artifact_key(DRIFT_CHART, dark)))
    assert chart.type == "image" and chart.data.startswith("data:image/png;base64,")
    # The same data through the original (not darkened) source: no drift, no event.
    code, out, err = run_main(["score", str(sample_manifest), trained_run.name, "--runs", str(runs), "--out",
                               str(tmp_path / "scores"), "--json"], monkeypatch, capsys)
    assert code == 0 and not json.loads(out)["drift"]["detected"], err
    assert drift_events(sample_manifest) == []


def test_no_champion_and_no_run_id_is_one_line_before_any_server(tmp_path, sample_manifest, monkeypatch, capsys):
    code, out, err = run_main(["score", str(sample_manifest), "--runs", str(tmp_path / "runs")], monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "no champion" in err and "RUN_ID" in err
