"""Training runs on the validated sample: run dir contents, refusal, resume, determinism."""

import io
import json
import os
import shutil

import numpy as np
import pytest

from mmpipe.ingest.version import load_dataset
from mmpipe.runs.record import RunDir, load_record
from mmpipe.serving.export import load_serving
from mmpipe.serving.predict import predict_raw
from mmpipe.train import TrainingError, train
from mmpipe.train.checkpoints import state_path as checkpoint_state
from mmpipe.train.model import load_model
from mmpipe.train.resume import training_lock
from tests.fixtures.cli import documented_json_keys
from tests.fixtures.datasets import run_config
from tests.fixtures.files import gradient
from tests.fixtures.prefect import run_log_lines
from tests.fixtures.training import StopAfter

pytestmark = pytest.mark.slow  # trains models


@pytest.fixture
def data_dir(validated_sample, tmp_path):
    shutil.copytree(validated_sample, tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.parametrize("variant", ["fused", "text", "image"])
def test_each_variant_trains_and_writes_a_complete_run(data_dir, tmp_path, variant):
    result = train(run_config(data_dir, tmp_path / "runs", **{"model.variant": variant,
                                                              "train.export_serving": True,
                                                              "train.class_weights": "balanced"}))
    assert result.status == "completed" and result.run_dir.parent == tmp_path / "runs"
    run = RunDir(result.run_dir)
    record = load_record(run)
    assert record.status == "completed" and record.variant == variant
    assert record.dataset_version == load_dataset(data_dir).version
    assert record.config_hash and record.seconds and record.classes and record.run_config.seed == record.seed
    assert record.packages["tensorflow"] and len(record.history) == 1
    assert set(record.class_weights) == set(record.classes)  # what the loss weighed is on record
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1"}
    heads = {"fused": ["fused", "text", "image"], "text": ["text"], "image": ["image"]}[variant]
    assert record.blend["heads"] == heads and len(record.blend["weights"]) == len(heads)
    assert record.blend["fitted_on"] == {"split": "val", "rows": load_dataset(data_dir).rows_of("val")}
    assert record.blend["calibrated"]["log_loss"] <= record.blend["uncalibrated"]["log_loss"] + 1e-9
    assert record.best_epoch == 1 and record.monitor == "val_macro_f1"
    assert record.machine["cpu_flags"] is not None and record.machine["cpu_count"]
    assert run.model.is_file() and run.history.is_file() and run.checkpoint(1).is_file()
    assert any(run.logs.rglob("*tfevents*"))
    model = load_model(run.model)
    inputs = {"fused": {"text", "image"}, "text": {"text"}, "image": {"image"}}[variant]
    assert set(model.input) == inputs
    # The serving export takes exactly the variant's inputs, raw.
    served = predict_raw(load_serving(result.run_dir), ["a sun"] if "text" in inputs else None,
                         [png_bytes()] if "image" in inputs else None)
    assert served["probabilities"].shape == (1, len(record.classes))
    assert served["label"][0].decode() in record.classes


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    gradient(20, 12).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_unvalidated_dataset_is_refused(ingested_sample, tmp_path):
    shutil.copytree(ingested_sample, tmp_path / "data")
    shutil.rmtree(tmp_path / "data" / "validation", ignore_errors=True)
    with pytest.raises(TrainingError, match="mmpipe validate"):
        train(run_config(tmp_path / "data", tmp_path / "runs"))


# Early stopping watches from the first epoch and has a patience of one: the kill after epoch 2 falls where its
# state (the best value, the wait, and each head's best, which kept the run going at epoch 2) decides the end.
RESUMABLE = {"train.epochs": 8, "train.early_stopping_patience": 1, "train.early_stopping_warmup": 0,
             "model.learning_rate": 0.05, "model.dropout_rate": 0.25}


def final_weights(run_dir):
    return load_model(RunDir(run_dir).model).get_weights()


@pytest.fixture(scope="module")
def uninterrupted(validated_sample, tmp_path_factory):
    """A run that early stopping ends before its last epoch (patience 1, a high learning rate)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    shutil.copytree(validated_sample, root / "data")
    result = train(run_config(root / "data", root / "runs", **RESUMABLE))
    assert len(result.history["loss"]) < RESUMABLE["train.epochs"], "early stopping must end this run"
    return result


@pytest.mark.parametrize("damage", ["none", "last-checkpoint-half-written"])
def test_a_resumed_run_is_the_same_run(uninterrupted, data_dir, tmp_path, damage):
    """Same history, same final weights (early stopping's state and best weights survive the kill); a
    checkpoint the kill left half-written is skipped, and the run says so."""
    config = run_config(data_dir, tmp_path / "runs", **RESUMABLE)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAfter(2)])
    interrupted = next((tmp_path / "runs").iterdir())
    assert load_record(RunDir(interrupted)).status == "failed"
    if damage != "none":
        checkpoint_state(RunDir(interrupted), 2).write_text('{"epoch": 2, "early_st')
    else:  # a second `--resume` while another process trains the run is refused, not run beside it
        with training_lock(RunDir(interrupted)), pytest.raises(
                TrainingError, match=rf"run {interrupted.name} is being trained \(pid {os.getpid()} on "):
            train(config, resume=interrupted.name)
        assert load_record(RunDir(interrupted)).status == "failed"  # untouched by the refused one
    resumed = train(config, resume=interrupted.name)
    assert resumed.run_id == interrupted.name
    assert resumed.history.keys() == uninterrupted.history.keys()
    for key, values in uninterrupted.history.items():
        np.testing.assert_allclose(resumed.history[key], values, rtol=1e-6, err_msg=key)
    for mine, theirs in zip(final_weights(resumed.run_dir), final_weights(uninterrupted.run_dir), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)
    expected_start = 2 if damage == "none" else 1
    assert resumed.notes[0] == f"resumed from epoch {expected_start}"
    skipped = [note for note in resumed.notes if "checkpoint" in note]  # the half-written epoch, said once
    assert (damage == "none") == (skipped == [])
    with RunDir(resumed.run_dir).history.open() as handle:
        assert len(handle.readlines()) == len(values) + 1  # history.csv rebuilt: a header and one row per epoch
    with pytest.raises(TrainingError, match="already completed"):
        train(config, resume=interrupted.name)


def test_same_data_config_and_seed_give_the_same_metrics(data_dir, tmp_path):
    """Two runs of one config on one machine: the same history, blend, predictions and test metrics (speed aside);
    another seed changes them."""
    from mmpipe.evaluate import evaluate_run

    config = run_config(data_dir, tmp_path / "runs", **{"train.epochs": 2})
    first, second = train(config), train(config)
    assert first.run_id != second.run_id
    assert first.history == second.history
    records = [load_record(RunDir(result.run_dir)) for result in (first, second)]
    assert records[0].blend == records[1].blend and records[0].machine == records[1].machine
    assert records[0].machine["cpu_count"] and "intra_op_threads" in records[0].machine
    evaluated = [evaluate_run(result.run_dir, config.evaluate).result for result in (first, second)]
    for result in evaluated:
        for speed in ("throughput_samples_per_s", "latency_ms"):
            result["metrics"].pop(speed)
    assert evaluated[0]["metrics"] == evaluated[1]["metrics"] and evaluated[0]["heads"] == evaluated[1]["heads"]
    assert evaluated[0]["per_class"] == evaluated[1]["per_class"]
    other = train(run_config(data_dir, tmp_path / "runs", **{"train.epochs": 1, "seed": 7}))
    assert other.history["loss"][0] != first.history["loss"][0]  # from the first epoch on


def test_train_flow_reports_each_epoch_and_returns_the_run_summary(prefect_api, data_dir, tmp_path, monkeypatch):
    import asyncio
    import sys

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    from flows.train import train_flow
    from mmpipe.cli.output import ProgressBar

    config = run_config(data_dir, tmp_path / "runs", **RESUMABLE)  # early stopping ends it before its 8 epochs
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # the bar a terminal shows
    with run_log_lines() as logged, ProgressBar("Training", quiet=False) as bar:
        state = train_flow(config, return_state=True)
        shown = bar.progress.tasks[0]
    assert state.is_completed()
    summary = state.result()
    # The bar moved with the epochs (logged by the training task) and says which one and its last score.
    assert shown.completed == len(summary["history"]["loss"]) and shown.total == 8
    assert shown.description.startswith(f"Training: training, epoch {int(shown.completed)}/8 val_macro_f1 ")
    assert summary["status"] == "completed"
    assert set(summary) == documented_json_keys("mmpipe train")  # what `mmpipe train --json` prints, as README says
    assert summary["distribution"]["strategy"] == "one_device"
    assert load_record(RunDir(tmp_path / "runs" / summary["run_id"])).variant == "fused"
    lines = [line for line in logged if line.startswith("epoch ")]
    epochs = len(summary["history"]["loss"])
    assert epochs < 8  # early stopping ended it
    assert [line.split(":")[0] for line in lines] == [f"epoch {n}/8" for n in range(1, epochs + 1)]
    assert "val_loss" in lines[-1]

    async def progress():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                type=ArtifactFilterType(any_=["progress"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))

    [artifact] = asyncio.run(progress())
    assert artifact.data == 100.0 and artifact.description == "Training, 8 epochs"  # done, though stopped early

    async def flow_run_name():
        async with get_client() as client:
            return (await client.read_flow_run(state.state_details.flow_run_id)).name

    assert asyncio.run(flow_run_name()) == "train fused"  # one process, not one worker of several


def test_cli_train_json_then_a_resume_of_a_completed_run_is_refused(prefect_api, data_dir, tmp_path, monkeypatch,
                                                                     capsys):
    from tests.fixtures.cli import run_main

    for key, value in {"IMAGE__SIZE": "16", "TRAIN__EXPORT_SERVING": "false", "MODEL__LSTM_UNITS": "8",
                       "MODEL__CONV_FILTERS": "[4, 8]", "MODEL__EMBEDDING_DIM": "8", "MODEL__DENSE_UNITS": "8"}.items():
        monkeypatch.setenv(f"MMPIPE_{key}", value)
    code, out, err = run_main(["train", "--data", str(data_dir), "--runs", str(tmp_path / "runs"), "--epochs", "1",
                               "--variant", "image", "--json"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "completed" and len(summary["history"]["loss"]) == 1
    assert load_record(RunDir(tmp_path / "runs" / summary["run_id"])).variant == "image"
    code, _, err = run_main(["train", "--data", str(data_dir), "--runs", str(tmp_path / "runs"), "--resume",
                             summary["run_id"]], monkeypatch, capsys)
    assert code == 2 and "already completed" in err and err.count("\n") == 1


def test_cli_refuses_an_unknown_resume_in_one_line(data_dir, tmp_path, monkeypatch, capsys):
    from tests.fixtures.cli import run_main

    code, out, err = run_main(["train", "--data", str(data_dir), "--runs", str(tmp_path / "runs"), "--resume", "nope"],
                              monkeypatch, capsys)
    assert code == 2 and out == "" and "no run nope" in err and err.count("\n") == 1
