"""Training runs on the validated sample: run dir contents, refusal, resume, determinism."""

import io
import shutil

import keras
import numpy as np
import pytest

from mmpipe.ingest.version import load_dataset
from mmpipe.runs.record import RunDir, load_record
from mmpipe.serving.export import load_serving
from mmpipe.serving.predict import predict_raw
from mmpipe.train import TrainingError, train
from tests.fixtures.datasets import run_config
from tests.fixtures.files import gradient

pytestmark = pytest.mark.slow  # trains models


@pytest.fixture
def data_dir(validated_sample, tmp_path):
    shutil.copytree(validated_sample, tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.parametrize("variant", ["fused", "text", "image"])
def test_each_variant_trains_and_writes_a_complete_run(data_dir, tmp_path, variant):
    result = train(run_config(data_dir, tmp_path / "runs", **{"model.variant": variant,
                                                              "train.export_serving": True}))
    assert result.status == "completed" and result.run_dir.parent == tmp_path / "runs"
    run = RunDir(result.run_dir)
    record = load_record(run)
    assert record.status == "completed" and record.variant == variant
    assert record.dataset_version == load_dataset(data_dir).version
    assert record.config_hash and record.seconds and record.classes and record.run_config.seed == record.seed
    assert record.packages["tensorflow"] and len(record.history) == 1
    assert set(result.history) >= {"loss", "accuracy", "val_loss"}
    assert run.model.is_file() and run.history.is_file() and run.checkpoint(1).is_file()
    assert any(run.logs.rglob("*tfevents*"))
    model = keras.models.load_model(run.model)
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


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated kill after epoch 1")


def test_resume_continues_and_matches_an_uninterrupted_run(data_dir, tmp_path):
    config = run_config(data_dir, tmp_path / "runs", **{"train.epochs": 2, "train.early_stopping_patience": 5})
    whole = train(config)
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAfterFirstEpoch()])
    interrupted = next(p for p in (tmp_path / "runs").iterdir() if p != whole.run_dir)
    assert load_record(RunDir(interrupted)).status == "failed"
    resumed = train(config, resume=interrupted.name)
    assert resumed.run_id == interrupted.name and len(resumed.history["loss"]) == 2
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-4)
    np.testing.assert_allclose(resumed.history["val_loss"], whole.history["val_loss"], rtol=1e-4)
    with pytest.raises(TrainingError, match="already completed"):
        train(config, resume=interrupted.name)


def test_same_data_config_and_seed_give_the_same_metrics(data_dir, tmp_path):
    config = run_config(data_dir, tmp_path / "runs", **{"model.variant": "image"})
    first, second = train(config), train(config)
    assert first.run_id != second.run_id
    np.testing.assert_allclose(first.history["loss"], second.history["loss"], rtol=1e-5)
    other = train(run_config(data_dir, tmp_path / "runs", **{"model.variant": "image", "seed": 7}))
    assert other.history["loss"] != first.history["loss"]


def test_train_flow_completes_with_the_run_summary(prefect_api, data_dir, tmp_path):
    from flows.train import train_flow

    config = run_config(data_dir, tmp_path / "runs", **{"model.variant": "text"})
    state = train_flow(config, return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["status"] == "completed" and set(summary) == {"run_id", "run_dir", "history", "status"}
    assert load_record(RunDir(tmp_path / "runs" / summary["run_id"])).variant == "text"


def test_cli_refuses_an_unknown_resume_in_one_line(data_dir, tmp_path, monkeypatch, capsys):
    from tests.fixtures.cli import run_main

    code, out, err = run_main(["train", "--data", str(data_dir), "--runs", str(tmp_path / "runs"), "--resume", "nope"],
                              monkeypatch, capsys)
    assert code == 2 and out == "" and "no run nope" in err and err.count("\n") == 1
