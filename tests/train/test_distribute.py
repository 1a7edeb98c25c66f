"""Training past one device: input shares per worker, strategy choice and its errors, mirrored training on
two CPU devices against one device (and its resume), two worker processes training one run (and resuming it),
and the CLI as the issue's checks use it."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mmpipe.config import EvaluateConfig, TrainConfig
from mmpipe.errors import TrainingError
from mmpipe.evaluate.score import evaluate_run
from mmpipe.ingest.version import load_dataset
from mmpipe.runs.record import RunDir, load_record
from mmpipe.serving.export import load_serving
from mmpipe.serving.predict import predict_raw
from mmpipe.train.distribute import Distribution, distribution_for, lost_worker
from mmpipe.train.inputs import epoch_steps, make_dataset, plan_shares, split_rows
from mmpipe.train.launch import launch_local_workers, local_worker_environments
from mmpipe.train.model import load_model
from tests.fixtures.cli import run_main
from tests.fixtures.datasets import TINY_MODEL, tamper
from tests.train.test_fit import png_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def row_groups(ingested_sample, tmp_path):
    """The ingested sample whose train shard is written in row groups of 4 rows."""
    shutil.copytree(ingested_sample, tmp_path / "data")
    tamper(tmp_path / "data", lambda table: table, row_group_size=4)
    return tmp_path / "data"


@pytest.fixture
def one_row_group(ingested_sample, tmp_path):
    shutil.copytree(ingested_sample, tmp_path / "data")
    tamper(tmp_path / "data", lambda table: table, row_group_size=1 << 20)
    return tmp_path / "data"


def test_row_groups_are_dealt_once_each_in_even_shares(row_groups):
    version = load_dataset(row_groups)
    shares = plan_shares(version, "train", 3)
    units = [unit for part in shares.parts for unit in part]
    assert not shares.by_rows and shares.sharding == "row groups"
    assert len(units) == len(set(units)) == -(-split_rows(version, "train") // 4)  # every row group, once
    assert sum(shares.rows) == split_rows(version, "train") and max(shares.rows) - min(shares.rows) <= 4
    assert all(part == sorted(part) for part in shares.parts)  # each share read in file order
    assert plan_shares(version, "train", 3) == shares  # every worker computes the same plan


def workers_of(count: int, per_replica_batch: int) -> Distribution:
    """How training would be spread over `count` one-device workers (the strategy object aside)."""
    return Distribution(SimpleNamespace(num_replicas_in_sync=count), "multi_worker", ("/cpu:0",), count, 0,
                        per_replica_batch)


def test_an_epoch_has_the_steps_of_the_largest_share_so_no_row_is_skipped(row_groups):
    version = load_dataset(row_groups)
    shares = plan_shares(version, "train", 2)
    steps = epoch_steps(shares, workers_of(2, 3))
    assert steps == max(-(-rows // 3) for rows in shares.rows)
    for index, rows in enumerate(shares.rows):  # each worker reads its whole share in its steps
        data = make_dataset(version, "train", batch_size=3, with_ids=True, share=(shares, index)).repeat().take(steps)
        assert len({row for _, _, ids in data for row in ids.numpy()}) == rows


def test_a_worker_that_stopped_is_named_as_tf_config_names_it():
    error = RuntimeError("Collective ops is aborted by: {{function_node __wrapped__CollectiveReduceV2_device_/job:"
                         "worker/replica:0/task:0/device:CPU:0}} The following tasks are unhealthy (stopped sending "
                         "heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed. [Op:CollectiveReduceV2]")
    message = lost_worker(error, "RUN")
    assert message.startswith("the worker of TF_CONFIG index 1 stopped during run RUN") and "index 0" not in message
    assert "`mmpipe train --resume RUN`" in message


def test_a_cluster_in_tf_config_with_a_one_process_strategy_is_refused(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(TrainingError, match="TF_CONFIG names 2 workers, but train.strategy is one_device"):
        distribution_for(TrainConfig(strategy="one_device"))
    # auto takes the cluster for a multi-worker run (which cannot start in a process that already runs TF).
    import tensorflow as tf

    tf.constant(1)  # started: so the strategy is refused here, never left waiting for a cluster
    with pytest.raises(TrainingError, match="multi_worker has to start before TensorFlow"):
        distribution_for(TrainConfig(strategy="auto"))


def test_a_split_with_too_few_row_groups_is_shared_by_rows(one_row_group):
    shares = plan_shares(load_dataset(one_row_group), "train", 2)
    assert shares.by_rows and shares.sharding.startswith("every n-th row")


@pytest.mark.parametrize("layout", ["row_groups", "one_row_group"])
def test_each_worker_reads_its_own_rows_and_together_every_row(layout, request):
    version = load_dataset(request.getfixturevalue(layout))
    shares = plan_shares(version, "train", 2)
    seen = []
    for index in range(2):
        data = make_dataset(version, "train", batch_size=5, shuffle_buffer=64, seed=3, with_ids=True,
                            share=(shares, index))
        seen.append([row_id.decode() for _, _, ids in data for row_id in ids.numpy()])
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == split_rows(version, "train")
    assert sorted(seen[0] + seen[1]) == sorted(row for _, _, ids in make_dataset(
        version, "train", batch_size=64, with_ids=True) for row in (i.decode() for i in ids.numpy()))
    assert abs(len(seen[0]) - len(seen[1])) <= (1 if shares.by_rows else 4)


def test_one_device_is_the_default_and_the_global_batch_is_the_batch(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    distribution = distribution_for(TrainConfig(batch_size=12))
    assert (distribution.name, distribution.replicas, distribution.workers, distribution.global_batch) == (
        "one_device", 1, 1, 12)
    assert distribution.chief and distribution.from_chief([3, 1]) == [3, 1]


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs TF_CONFIG in the environment of every worker"),
    ("{not json", "TF_CONFIG is not usable"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "TF_CONFIG is not usable"),
    ('{"cluster": {"ps": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}', "'chief' or 'worker'"),
])
def test_multi_worker_without_a_usable_tf_config_says_what_to_set(tf_config, message, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(TrainingError, match=message) as raised:
        distribution_for(TrainConfig(strategy="multi_worker"))
    assert "\n" not in str(raised.value)


def test_cpu_devices_after_tensorflow_started_ask_for_a_fresh_process():
    import tensorflow as tf

    tf.constant(1)  # the runtime has started, as in any process that already trained
    with pytest.raises(TrainingError, match=r"train.cpu_devices = 3, but TensorFlow already started .* fresh process"):
        distribution_for(TrainConfig(cpu_devices=3))


# Mirrored vs one device: the same rows per step (per replica 8 x 2 replicas = 16) and batch normalization
# over all of them, so the same gradients but for float summation order; without dropout and augmentation,
# whose random draws are per replica (statistically the same, not numerically).
MIRRORED = {"train.strategy": "mirrored", "train.cpu_devices": 2, "train.batch_size": 8}
# Class weights too: they become sample weights in the input pipeline (Keras' cannot weigh a distributed dataset).
THREE_EPOCHS = {"train.epochs": 3, "train.early_stopping_patience": 5, "train.class_weights": "balanced"}
NOT_RANDOM = {"model.dropout_rate": 0.0, "model.modality_dropout": 0.0, "model.augment": False}
TOLERANCE = 1e-3


def history(runs: Path) -> tuple[RunDir, dict]:
    (path,) = runs.iterdir()
    record = load_record(RunDir(path))
    return RunDir(path), record


@pytest.mark.slow(seconds=60)  # trains in a fresh process
def test_mirrored_on_two_cpu_devices_matches_one_device_and_resumes_as_the_same_run(validated_sample, tmp_path,
                                                                                    monkeypatch, capsys):
    one, mirrored, resumed = (tmp_path / name for name in ("one", "mirrored", "resumed"))
    jobs = [{"runs": str(one), "overrides": {**THREE_EPOCHS, **NOT_RANDOM, "train.cpu_devices": 2,
                                             "train.strategy": "one_device", "train.batch_size": 16}},
            {"runs": str(mirrored), "overrides": {**THREE_EPOCHS, **NOT_RANDOM, **MIRRORED,
                                                  "train.export_serving": True}},
            {"runs": str(resumed), "overrides": {**THREE_EPOCHS, **NOT_RANDOM, **MIRRORED}, "stop_after": 2},
            {"runs": str(resumed), "overrides": {**THREE_EPOCHS, **NOT_RANDOM, **MIRRORED}, "resume": True}]
    spec = tmp_path / "jobs.json"
    data_dir = shutil.copytree(validated_sample, tmp_path / "data")
    spec.write_text(json.dumps({"data_dir": str(data_dir), "jobs": jobs}))
    done = subprocess.run([sys.executable, "-m", "tests.train.train_jobs", str(spec)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _, alone = history(one)
    run, together = history(mirrored)
    assert alone.distribution == {"strategy": "one_device", "replicas": 1, "workers": 1, "devices": ["/device:CPU:0"],
                                  "per_replica_batch": 16, "global_batch": 16, "sharding": "none"}
    assert together.distribution["strategy"] == "mirrored" and together.distribution["replicas"] == 2
    assert together.distribution["global_batch"] == 16 and len(together.distribution["devices"]) == 2
    assert together.class_weights == alone.class_weights and len(set(alone.class_weights.values())) > 1
    # Keras logs each head's own training loss as a mean of the replicas' means, which weighted rows split unevenly
    # make differ from one device's mean; the loss trained on (their weighted sum, `loss`) and every validation
    # score agree.
    for key in set(alone.history[0]) - {"fused_loss", "text_loss", "image_loss"}:
        np.testing.assert_allclose([epoch[key] for epoch in together.history],
                                   [epoch[key] for epoch in alone.history], rtol=TOLERANCE, err_msg=key)
    # A mirrored run resumed after a kill is the same run as one never stopped: same history, same weights.
    resumed_run, again = history(resumed)
    assert again.status == "completed" and again.resumed_from_epoch == 2 and again.distribution == together.distribution
    for key in together.history[0]:
        np.testing.assert_allclose([e[key] for e in again.history], [e[key] for e in together.history], rtol=1e-5,
                                   err_msg=key)
    for mine, theirs in zip(load_model(resumed_run.model).get_weights(), load_model(run.model).get_weights(),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    # The serving export is the single-device SavedModel any run has: it serves raw inputs.
    served = predict_raw(load_serving(run.path), ["a sun at noon"], [png_bytes()])
    assert served["probabilities"].shape == (1, len(together.classes))
    assert served["label"][0].decode() in together.classes
    # The run says how it was trained, and is evaluated as any run is (nothing there depends on the strategy).
    code, shown, err = run_main(["runs", "show", run.path.name, "--runs", str(mirrored)], monkeypatch, capsys)
    assert code == 0 and "trained: mirrored, 2 replicas on 1 worker, batch 8 per replica (16 global)" in shown, err
    evaluation = evaluate_run(run.path, EvaluateConfig())
    assert evaluation.summary()["n"] == load_dataset(data_dir).rows_of("test") and run.metrics.is_file()


def tiny_config_file(tmp_path: Path, **train) -> Path:
    """The test model's settings as a config file, for the CLI in other processes."""
    lines = ["[image]", "size = 16", "[model]"]
    lines += [f"{key.split('.')[1]} = {json.dumps(value)}" for key, value in TINY_MODEL.items() if key.startswith("m")]
    lines += ["[train]", f"batch_size = {TINY_MODEL['train.batch_size']}", "export_serving = false"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in train.items()]
    path = tmp_path / "mmpipe.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def prefect_env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    return {"PREFECT_API_URL": str(get_current_settings().api.url), "TF_CPP_MIN_LOG_LEVEL": "3"}


EPOCHS = 12  # tiny epochs: the kill after the first must land before the last


@pytest.mark.slow(seconds=70)  # starts worker processes
def test_two_workers_train_one_run_and_resume_it_after_a_worker_is_killed(prefect_api, validated_sample, tmp_path):
    config = tiny_config_file(tmp_path, epochs=EPOCHS, early_stopping_patience=EPOCHS)
    data_dir = shutil.copytree(validated_sample, tmp_path / "data")
    runs = tmp_path / "runs"
    arguments = ["train", "--data", str(data_dir), "--runs", str(runs), "--config", str(config), "--json"]
    env = {**os.environ, **prefect_env()}
    # Worker 1 is killed (-9) once the first epoch's checkpoint is complete: the chief notices (TensorFlow's
    # heartbeats), stops, and says in one line how to continue.
    workers = [subprocess.Popen([sys.executable, "-m", "mmpipe", *arguments], env={**env, **extra},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for extra in local_worker_environments(2)]
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/checkpoints/epoch-001.json")):
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "no epoch was finished"
            time.sleep(0.1)
        workers[1].send_signal(signal.SIGKILL)
        _, chief_err = workers[0].communicate(timeout=120)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
    assert workers[0].returncode == 2 and chief_err.count("\n") == 1, chief_err[-3000:]
    assert "the worker of TF_CONFIG index 1 stopped during run" in chief_err and "--resume" in chief_err
    (run_dir,) = runs.iterdir()  # one run, the chief's
    resumed = launch_local_workers(2, [*arguments[:1], "--resume", run_dir.name, *arguments[1:]], env=env,
                                   logs=tmp_path / "logs", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    record = load_record(RunDir(run_dir))
    assert summary["run_id"] == run_dir.name and list(runs.iterdir()) == [run_dir]
    assert record.status == "completed" and [e["epoch"] for e in record.history] == list(range(1, EPOCHS + 1))
    assert record.resumed_from_epoch >= 1 and record.notes[0].startswith("resumed from epoch")
    assert record.distribution["workers"] == 2 and record.distribution["replicas"] == 2
    assert record.distribution["global_batch"] == 2 * TINY_MODEL["train.batch_size"]
    assert summary["distribution"] == record.distribution  # what `--json` says is what the run recorded
    assert not list(Path(tempfile.gettempdir()).glob(f"mmpipe-*/worker-*-{run_dir.name}"))  # no copy left behind
    # In the UI, each worker's flow run says which worker it is.
    assert {"train fused (worker 0 of 2)", "train fused (worker 1 of 2)"} <= set(asyncio.run(flow_run_names()))


async def flow_run_names() -> list[str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return [run.name for run in await client.read_flow_runs(limit=200)]
