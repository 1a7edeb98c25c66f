"""Evaluation of a real trained run: files, numbers that agree with the predictions, the flow."""

import asyncio
import base64
import json
import shutil
from functools import partial

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.artifacts import (
    CONFUSION_MATRIX,
    EVALUATION_METRICS,
    EVALUATION_REPORT,
    EVALUATION_REPORT_FILE,
    PROMOTION_DECISION,
    artifact_key,
)
from flows.evaluate import evaluate_flow
from mmpipe.cli import app
from mmpipe.config import EvaluateConfig
from mmpipe.evaluate import EvaluationError, evaluate_run
from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.ingest.version import load_dataset
from mmpipe.runs.record import RunDir, load_record
from mmpipe.runs.store import read_champion
from mmpipe.train.inputs import split_paths
from tests.fixtures.cli import documented_json_keys
from tests.fixtures.datasets import artifact, run_config
from tests.fixtures.files import external_links, gradient


@pytest.fixture
def run_dir(trained_run, tmp_path):
    """A private copy of the session's trained run (its data dir is shared and only read)."""
    shutil.copytree(trained_run, tmp_path / "runs" / trained_run.name)
    return tmp_path / "runs" / trained_run.name


def test_primary_evaluation_writes_every_file_and_consistent_numbers(run_dir):
    evaluation = evaluate_run(run_dir, EvaluateConfig())
    assert evaluation.out_dir == run_dir
    run = RunDir(run_dir)
    result = json.loads(run.metrics.read_text())
    record = load_record(run)
    test_ids = {i for path in split_paths(load_dataset(record.data_dir), "test")
                for i in pq.read_table(path, columns=["id"])["id"].to_pylist()}
    predictions = pq.read_table(run.predictions).to_pydict()
    assert set(predictions["id"]) == test_ids and result["n"] == len(test_ids) > 0
    # metrics.json is what the predictions file says, recomputed independently of the run.
    classes = record.classes
    labels = np.array([classes.index(label) for label in predictions["label"]])
    again = classification_metrics(labels, np.array(predictions["probabilities"]), classes)
    assert again["metrics"]["macro_f1"] == pytest.approx(result["metrics"]["macro_f1"])
    assert again["confusion_matrix"] == result["confusion_matrix"]
    assert {"accuracy", "macro_f1", "weighted_f1", "log_loss", "ece", "top_2_accuracy", "latency_ms",
            "throughput_samples_per_s", "ece_uncalibrated", "log_loss_uncalibrated"} <= set(result["metrics"])
    # Each head alone on the same rows, the model's own first: what fusion added, per class too.
    assert set(result["heads"]) == set(record.blend["heads"]) and record.blend["heads"] == ["fused", "text", "image"]
    for found in result["heads"].values():
        assert set(found["per_class_f1"]) == set(classes) and 0 <= found["metrics"]["macro_f1"] <= 1
    assert result["metrics"]["ece_uncalibrated"] == result["heads"]["fused"]["metrics"]["ece"]
    assert result["metrics"]["throughput_samples_per_s"] > 0 and result["metrics"]["latency_ms"]["p50"] > 0
    with Image.open(run.confusion_matrix) as png:
        assert png.format == "PNG" and png.width > 100
    page = run.report.read_text()
    assert result["report"] == str(run.report)
    assert f"{result['metrics']['accuracy']:.4f}" in page and record.dataset_version in page
    assert page.count("<svg") == 3 and external_links(page) == []  # self-contained: nothing fetched
    assert "What fusion added" in page and "image head alone" in page
    assert "expected calibration error before calibration" in page
    assert record.lineage["shards"][0]["sha256"] in page
    assert summary_keys(evaluation.summary())


def test_slices_cover_every_row_once_per_dimension_and_match_the_predictions(run_dir):
    result = evaluate_run(run_dir, EvaluateConfig(min_slice_rows=5)).result
    assert json.loads(RunDir(run_dir).metrics.read_text())["slices"] == result["slices"]
    slices = result["slices"]
    assert list(slices) == ["class", "image_format", "image_size", "text_words"]
    for entries in slices.values():
        assert sum(entry["n"] for entry in entries) == result["n"]
        # Small: under min_slice_rows and at most half of an even share of the dimension's rows (rare).
        assert all(entry["small"] == (entry["n"] < 5 and entry["n"] <= result["n"] / 2 / len(entries))
                   for entry in entries)
        assert all(entry["accuracy_interval"][0] <= entry["accuracy"] <= entry["accuracy_interval"][1]
                   for entry in entries)
    by_class = {entry["value"]: entry["accuracy"] for entry in slices["class"]}
    assert by_class == {name: pytest.approx(v["recall"]) for name, v in result["per_class"].items() if v["support"]}
    # Recomputed from predictions.parquet and the shards' own columns, not from the slicing code.
    record = load_record(RunDir(run_dir))
    formats = {row_id: fmt for path in split_paths(load_dataset(record.data_dir), "test")
               for row_id, fmt in zip(*pq.read_table(path, columns=["id", "orig_format"]).to_pydict().values(),
                                      strict=True)}
    predictions = pq.read_table(RunDir(run_dir).predictions).to_pydict()
    for entry in slices["image_format"]:
        hits = [label == guess for row_id, label, guess in zip(predictions["id"], predictions["label"],
                                                                predictions["predicted"], strict=True)
                if formats[row_id] == entry["value"]]
        assert entry["n"] == len(hits) and entry["accuracy"] == pytest.approx(sum(hits) / len(hits))


def test_a_slice_column_the_dataset_lacks_is_named_with_the_columns_it_has(run_dir):
    with pytest.raises(EvaluationError, match=r"slice_by names region.*(re-ingest|its columns: .*group)"):
        evaluate_run(run_dir, EvaluateConfig(slice_by=["region"]))


def test_slice_by_a_shard_column(run_dir):
    result = evaluate_run(run_dir, EvaluateConfig(slice_by=["group"])).result
    assert sum(entry["n"] for entry in result["slices"]["group"]) == result["n"]


def summary_keys(summary):
    return {"run_id", "split", "n", "metrics", "per_class"} <= set(summary) and "macro_f1" in summary["metrics"]


def test_other_splits_go_beside_the_primary_evaluation(run_dir):
    evaluation = evaluate_run(run_dir, EvaluateConfig(), split="val")
    assert evaluation.out_dir == RunDir(run_dir).evaluation(evaluation.result["dataset_version"], "val")
    assert not evaluation.result["primary"]
    assert RunDir(evaluation.out_dir).report.is_file() and not RunDir(run_dir).metrics.exists()


def test_unfinished_run_and_empty_split_are_refused(run_dir):
    run = RunDir(run_dir)
    record = load_record(run)
    record.model_copy(update={"status": "failed"}).save(run)
    with pytest.raises(EvaluationError, match="only completed runs"):
        evaluate_run(run_dir, EvaluateConfig())
    record.model_copy(update={"dataset_version": "an-older-version"}).save(run)
    with pytest.raises(EvaluationError, match="pass --data DIR"):  # the data dir moved on since training
        evaluate_run(run_dir, EvaluateConfig())
    record.save(run)
    with pytest.raises(EvaluationError, match="no 'holdout' rows"):
        evaluate_run(run_dir, EvaluateConfig(), split="holdout")


def test_flow_publishes_report_metrics_and_promotion(prefect_api, run_dir):
    config = run_config(run_dir.parent.parent / "unused-data", run_dir.parent)
    state = evaluate_flow(run_dir.name, config, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["promotion"]["promoted"] and read_champion(run_dir.parent)["run_id"] == run_dir.name
    assert set(summary) == documented_json_keys("mmpipe evaluate RUN_ID")  # what `mmpipe evaluate --json` prints
    flow_run = state.state_details.flow_run_id
    key = partial(artifact_key, data_dir=load_record(RunDir(run_dir)).data_dir)
    report = asyncio.run(artifact(flow_run, key(EVALUATION_REPORT)))
    assert report is not None and f"{summary['metrics']['macro_f1']:.4f}" in report.data
    table = asyncio.run(artifact(flow_run, key(EVALUATION_METRICS)))
    assert table is not None and "macro_f1" in str(table.data)
    assert "promoted to champion" in asyncio.run(artifact(flow_run, key(PROMOTION_DECISION))).data
    link = asyncio.run(artifact(flow_run, key(EVALUATION_REPORT_FILE)))
    assert link.type == "markdown" and f"]({RunDir(run_dir).report.as_uri()})" in link.data
    image = asyncio.run(artifact(flow_run, key(CONFUSION_MATRIX)))
    assert image.type == "image" and image.data == "data:image/png;base64," + base64.b64encode(
        RunDir(run_dir).confusion_matrix.read_bytes()).decode()
    assert "Promotion: promoted to champion" in RunDir(run_dir).report.read_text()


def test_cli_evaluate_json_then_runs_commands(prefect_api, run_dir, monkeypatch):
    monkeypatch.setenv("MMPIPE_EVALUATE__MIN_GAIN_OVER_MAJORITY", "-1")  # the tiny run is not above the majority
    runner = CliRunner()
    runs = ["--runs", str(run_dir.parent)]
    result = runner.invoke(app, ["evaluate", run_dir.name, *runs, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_id"] == run_dir.name and summary["n"] > 0 and "ece" in summary["metrics"]
    listed = json.loads(runner.invoke(app, ["runs", "list", *runs, "--json"]).stdout)
    assert listed[0]["run_id"] == run_dir.name and listed[0]["champion"] is True
    assert listed[0]["macro_f1"] == summary["metrics"]["macro_f1"]
    shown = json.loads(runner.invoke(app, ["runs", "show", run_dir.name, *runs, "--json"]).stdout)
    assert shown["lineage"]["validation"]["success"] is True and shown["promotion"]["promoted"] is True
    champion = runner.invoke(app, ["runs", "champion", *runs])
    assert run_dir.name in champion.stdout
    image = run_dir.parent / "query.png"
    gradient(20, 14).save(image)
    predicted = runner.invoke(app, ["predict", *runs, "--text", "a sun", "--image", str(image), "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["run_id"] == run_dir.name  # no RUN_ID: the champion


def test_the_baselines_are_the_majority_and_the_newest_single_input_runs(run_dir):
    record = load_record(RunDir(run_dir))

    def neighbour(run_id, variant, macro_f1, version=record.dataset_version):
        other = RunDir(run_dir.parent / run_id)
        other.path.mkdir()
        record.model_copy(update={"run_id": run_id, "variant": variant, "dataset_version": version}).save(other)
        other.metrics.write_text(json.dumps({"metrics": {"accuracy": macro_f1, "macro_f1": macro_f1}}))

    neighbour("20000101T000000Z-old", "text", 0.1)
    neighbour("20000102T000000Z-new", "text", 0.2)  # newer than the one above, older than the fused run
    neighbour("20000103T000000Z-img", "image", 0.3)
    neighbour("20000104T000000Z-else", "text", 0.9, version="another-version")
    result = evaluate_run(run_dir, EvaluateConfig()).result
    assert result["baselines"]["text"] == {"run_id": "20000102T000000Z-new", "accuracy": 0.2, "macro_f1": 0.2}
    assert result["baselines"]["image"]["run_id"] == "20000103T000000Z-img"
    # Always predicting the train split's largest class, scored on the same rows independently.
    train = record.lineage["counts"]["train"]
    largest = max(record.classes, key=lambda name: (train.get(name, 0), name))
    labels = pq.read_table(RunDir(run_dir).predictions).to_pydict()["label"]
    assert result["baselines"]["majority"]["class"] == largest
    assert result["baselines"]["majority"]["accuracy"] == pytest.approx(labels.count(largest) / len(labels))
    assert "text-only run 20000102T000000Z-new" in RunDir(run_dir).report.read_text()
