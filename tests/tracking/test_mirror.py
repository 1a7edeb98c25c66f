"""Runs mirrored to a real MLflow server: what a pipeline run logs, that mirroring again logs nothing twice,
that the registry alias follows the run store's champion, and that a server that does not answer costs a
warning, never a run (`mmpipe tracking sync` logs the run later)."""

import json
import logging
import shutil

import pytest

from flows.artifacts import TRACKED_RUN, artifact_key
from mmpipe.config import load_config
from mmpipe.evaluate import evaluate_run
from mmpipe.runs.record import RunDir, RunRecord, load_record
from mmpipe.runs.store import champion_lock, set_champion
from mmpipe.tracking import mirror_run, sync_runs
from mmpipe.tracking.mirror import RUN_TAG
from mmpipe.tracking.names import evaluation_metrics, source_name
from tests.fixtures.cli import run_main
from tests.fixtures.datasets import SAMPLE_CLASSES, TINY_MODEL, run_config
from tests.fixtures.tracking import free_port


def client_of(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def mlflow_runs(uri, run_id):
    client = client_of(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`{RUN_TAG}` = '{run_id}'")


def test_a_pipeline_run_is_one_mlflow_run_with_its_history_report_model_and_the_champion_alias(
        prefect_api, mlflow_server, sample_manifest, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    for key, value in {**TINY_MODEL, "image.size": 16, "train.epochs": 2, "evaluate.min_gain_over_majority": -1,
                       "contracts.split_tolerance": 0.25}.items():
        monkeypatch.setenv("MMPIPE_" + key.upper().replace(".", "__"), json.dumps(value))
    code, out, err = run_main(["run", str(sample_manifest), "--data", str(tmp_path / "data"), "--runs",
                               str(tmp_path / "runs"), "--json"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out)  # MLflow printed nothing of its own on stdout
    record = load_record(RunDir(tmp_path / "runs" / summary["run_id"]))
    (found,) = mlflow_runs(mlflow_server, summary["run_id"])
    assert found.info.run_name == summary["run_id"] and found.info.status == "FINISHED"
    assert found.info.experiment_id == summary["tracking"]["experiment_id"]
    client = client_of(mlflow_server)
    assert client.get_experiment(found.info.experiment_id).name == source_name(record) == "sample0/manifest.csv"
    assert found.data.metrics["accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
    assert found.data.metrics["macro_f1"] == pytest.approx(summary["metrics"]["macro_f1"])
    history = client.get_metric_history(found.info.run_id, "val_loss")
    assert [point.step for point in history] == [epoch["epoch"] for epoch in record.history] == [1, 2]
    assert [point.value for point in history] == pytest.approx([epoch["val_loss"] for epoch in record.history])
    assert found.data.params["model.lstm_units"] == str(TINY_MODEL["model.lstm_units"])
    assert found.data.params["dataset_version"] == summary["dataset_version"]
    artifacts = {entry.path for folder in ("evaluation", "charts")
                 for entry in client.list_artifacts(found.info.run_id, folder)}
    assert {"evaluation/report.html", "evaluation/metrics.json", "evaluation/predictions.parquet",
            "charts/reliability.png", "charts/training_curves.png"} <= artifacts
    assert found.data.tags["prefect.evaluate.flow_run_id"] and found.data.tags["prefect.train.flow_run_id"]
    # The serving export is a registered model version; the champion alias is on it.
    champion = client.get_model_version_by_alias(summary["tracking"]["model"], "champion")
    assert champion.run_id == found.info.run_id and champion.version == summary["tracking"]["model_version"]
    # The registered version serves raw rows as `mmpipe predict` does.
    import mlflow.pyfunc
    import pandas as pd

    from mmpipe.serving.export import load_serving
    from mmpipe.serving.predict import predict_raw
    from tests.train.test_fit import png_bytes

    served = mlflow.pyfunc.load_model(f"models:/{summary['tracking']['model']}@champion").predict(
        pd.DataFrame({"text": ["a sun at noon"], "image": [png_bytes()]}))
    direct = predict_raw(load_serving(RunDir(tmp_path / "runs" / summary["run_id"]).path), ["a sun at noon"],
                         [png_bytes()])
    assert served["label"][0] == direct["label"][0].decode()
    assert served["probability"][0] == pytest.approx(float(direct["probabilities"][0].max()), abs=1e-6)
    # The evaluate flow run links to the MLflow run page over http (the Prefect UI opens it).
    assert summary["tracking"]["url"].startswith(mlflow_server + "/#/experiments/")
    assert found.info.run_id in summary["tracking"]["url"]
    import asyncio

    from tests.fixtures.datasets import artifact

    evaluate_flow_run = found.data.tags["prefect.evaluate.flow_run_id"]
    link = asyncio.run(artifact(evaluate_flow_run, artifact_key(TRACKED_RUN, record.data_dir)))
    assert link is not None and summary["tracking"]["url"] in link.data
    # Mirrored again (as `tracking sync` does): still one run, no epoch logged twice.
    config = load_config(None, {"runs_dir": str(tmp_path / "runs"), "tracking.uri": mlflow_server}, environ={})
    sync_runs(tmp_path / "runs", config)
    (again,) = mlflow_runs(mlflow_server, summary["run_id"])
    assert len(client.get_metric_history(again.info.run_id, "val_loss")) == 2
    assert len(client.search_model_versions(f"name = '{summary['tracking']['model']}'")) == 1


@pytest.fixture
def two_runs(trained_run, tmp_path):
    """Two evaluated copies of the session's trained run in one run store (the second under another id)."""
    runs = tmp_path / "runs"
    first = shutil.copytree(trained_run, runs / trained_run.name)
    second = shutil.copytree(trained_run, runs / (trained_run.name + "-b"))
    record = load_record(RunDir(second)).model_dump()
    RunRecord.model_validate({**record, "run_id": second.name}).save(RunDir(second))
    config = run_config(trained_run.parents[1] / "data", runs)
    for run in (first, second):
        evaluate_run(run, config.evaluate)
    return first, second, config


def test_an_unreachable_server_costs_a_warning_and_sync_logs_the_run_later(mlflow_server, two_runs, caplog):
    first, second, config = two_runs
    gone = config.model_copy(update={"tracking": config.tracking.model_copy(
        update={"uri": f"http://127.0.0.1:{free_port()}"})})
    said = []
    with caplog.at_level(logging.WARNING, logger="mmpipe.tracking"):
        assert mirror_run(first, gone, warn=said.append) is None
        assert mirror_run(second, gone, warn=said.append) is None
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("mmpipe.tracking")]
    assert len(warned) == 1 and len(said) == 2  # once per process on the terminal; each flow run's log says it
    assert "does not answer" in warned[0] and f"mmpipe tracking sync --runs {first.parent}" in warned[0]
    # The server is back: sync logs both runs, and the alias follows the store's champion pointer.
    tracking = config.tracking.model_copy(update={"uri": mlflow_server, "experiment": f"sync-{first.name}"})
    config = config.model_copy(update={"tracking": tracking})
    with champion_lock(first.parent):
        set_champion(first.parent, {"run_id": first.name})
    synced = dict(sync_runs(first.parent, config))
    assert set(synced) == {first.name, second.name} and all(synced.values())
    client = client_of(mlflow_server)
    model = synced[first.name].model_name
    assert client.get_model_version_by_alias(model, "champion").version == synced[first.name].model_version
    with champion_lock(first.parent):
        set_champion(first.parent, {"run_id": second.name})  # a promotion in the store ...
    again = dict(sync_runs(first.parent, config))
    # ... moves the alias; the demoted version keeps its history; nothing was logged twice.
    assert client.get_model_version_by_alias(model, "champion").version == again[second.name].model_version
    assert again[first.name].mlflow_run_id == synced[first.name].mlflow_run_id
    assert len(client.search_model_versions(f"name = '{model}'")) == 2
    assert len(mlflow_runs(mlflow_server, first.name)) == 1
    # A mirror killed after the history, the evaluation's metrics and the model version were stored, before the
    # tags that close each part: the next one finishes the parts without a point or a version logged twice.
    mirrored = synced[first.name].mlflow_run_id
    epochs = len(client.get_metric_history(mirrored, "val_loss"))
    for part in ("training", "evaluation", "model"):
        client.delete_tag(mirrored, f"mmpipe.logged.{part}")
    sync_runs(first.parent, config)
    assert len(client.get_metric_history(mirrored, "val_loss")) == epochs == len(load_record(RunDir(first)).history)
    assert len(client.get_metric_history(mirrored, "accuracy")) == 1
    assert len(client.search_model_versions(f"name = '{model}'")) == 2
    assert SAMPLE_CLASSES[0] in {key.split("/")[1] for key in client.get_run(
        synced[first.name].mlflow_run_id).data.metrics if key.startswith("class/")}


def test_without_a_tracking_server_nothing_is_mirrored_and_sync_says_what_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(None, {"runs_dir": str(tmp_path)}, environ={})
    assert mirror_run(tmp_path / "any", config) is None
    code, out, err = run_main(["tracking", "sync", "--runs", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "set MLFLOW_TRACKING_URI" in err


def test_tracking_settings_do_not_change_the_config_hash():
    plain = load_config(None, {}, environ={})
    tracked = load_config(None, {"tracking.uri": "http://127.0.0.1:5000", "tracking.experiment": "x"}, environ={})
    assert plain.hash() == tracked.hash()
    assert load_config(None, {}, environ={}).tracking.resolved_uri({"MLFLOW_TRACKING_URI": "http://h:1"}) == "http://h:1"


def test_metric_names_are_mlflow_names_for_odd_class_and_slice_values():
    result = {"metrics": {"accuracy": 0.5, "macro_f1": 0.4, "per_split": {"a": 1.0}, "flag": True},
              "per_class": {"sun & moon": {"precision": 1.0, "recall": 0.5, "f1": 0.6, "support": 2}},
              "heads": {"text": {"metrics": {"accuracy": 0.3, "macro_f1": 0.2}}},
              "baselines": {"majority": {"class": "sun", "accuracy": 0.25, "macro_f1": 0.1}},
              "slices": {"text length": [{"value": "0-10 (chars)", "n": 3, "accuracy": 0.7, "small": True}]}}
    assert evaluation_metrics(result) == {
        "accuracy": 0.5, "macro_f1": 0.4, "per_split_a": 1.0, "class/sun _ moon/precision": 1.0,
        "class/sun _ moon/recall": 0.5, "class/sun _ moon/f1": 0.6, "head/text/accuracy": 0.3,
        "head/text/macro_f1": 0.2, "baseline/majority/accuracy": 0.25, "baseline/majority/macro_f1": 0.1,
        "slice/text length/0-10 _chars_/accuracy": 0.7}


@pytest.mark.parametrize("source, name", [("/data/flowers/manifest.csv", "flowers/manifest.csv"),
                                          ("/data/flowers", "flowers"),
                                          ("s3://bucket/drops/labels.jsonl", "drops/labels.jsonl")])
def test_the_experiment_is_named_after_the_source(tmp_path, source, name):
    (tmp_path / "dataset.json").write_text(json.dumps({"source": {"path": source}}))
    record = RunRecord(run_id="r", variant="fused", seed=1, dataset_version="v", data_dir=str(tmp_path), classes=["a"],
                       config={}, config_hash="h", code_version="0", started_at="2026-01-01T00:00:00Z")
    assert source_name(record) == name
    assert source_name(record.model_copy(update={"data_dir": str(tmp_path / "moved")})) == "mmpipe"
