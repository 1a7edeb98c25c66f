"""The installed command with the source, the data dir and the run store all in a bucket (a real S3 API on
loopback, reached through the standard AWS_* variables): ingest -> validate -> train -> evaluate, then
`runs list` and `predict` from the bucket. It is also the whole pipeline's check that stderr holds nothing
but mmpipe's own lines (TensorFlow's native logs, Prefect's console, s3fs and library warnings: none)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmpipe.storage.urls import CACHE_ENV
from tests.fixtures.cli import run_main

MMPIPE = str(Path(sys.executable).parent / "mmpipe")


@pytest.mark.slow(seconds=37)  # runs the installed command in a subprocess, training included
def test_the_pipeline_reads_and_writes_only_buckets(prefect_api, bucket, tmp_path, monkeypatch, capsys):
    from prefect.settings import get_current_settings

    # The session's Prefect server, as a user with PREFECT_API_URL set would have (no temporary one to start).
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "MMPIPE_IMAGE__SIZE": "16",
           "MMPIPE_TRAIN__EPOCHS": "1", "MMPIPE_MODEL__LSTM_UNITS": "8", "MMPIPE_MODEL__CONV_FILTERS": "[4, 8]"}
    subprocess.run([MMPIPE, "sample", str(tmp_path / "s"), "--rows", "40"], env=env, check=True, capture_output=True)
    source = f"{bucket.upload(tmp_path / 's', 'set')}/manifest.csv"
    data, runs = bucket.url("data"), bucket.url("runs")

    done = subprocess.run([MMPIPE, "run", source, "--data", data, "--runs", runs, "--json"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    run_id = summary["run_id"]
    assert summary["run_dir"] == f"{runs}/{run_id}" and summary["report"] == f"{runs}/{run_id}/report.html"
    assert all(line.startswith("mmpipe: ") for line in done.stderr.splitlines()), done.stderr[-2000:]
    assert str(tmp_path) not in done.stderr  # messages name the bucket, not this machine's copies

    bucket.fs.invalidate_cache()
    stored = {name.split("/", 1)[1] for name in bucket.fs.find(bucket.name)}
    assert {"data/dataset.json", f"runs/{run_id}/run.json", f"runs/{run_id}/metrics.json",
            f"runs/{run_id}/report.html", f"runs/{run_id}/model.keras"} <= stored
    assert any(name.startswith("data/shards/") for name in stored)
    assert not any(name.endswith(".mmpipe-writer.json") or name.startswith("data/cache/") for name in stored)
    record = json.loads(bucket.fs.cat_file(f"{bucket.name}/runs/{run_id}/run.json"))
    assert record["status"] == "completed" and record["dataset_version"] == summary["dataset_version"]

    # Another machine (an empty cache) reads the run store from the bucket alone (in this process: the
    # commands run no flow, and TensorFlow is loaded already).
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    code, out, err = run_main(["runs", "list", "--runs", runs, "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert [row["run_id"] for row in json.loads(out)] == [run_id]
    image = next((tmp_path / "s" / "images").iterdir())
    code, out, err = run_main(["predict", run_id, "--runs", runs, "--text", "a lantern at night", "--image",
                               str(image), "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["label"] in {"lantern", "moon", "sun", "window"}
    assert not (tmp_path / "elsewhere").exists()  # readers copy to temporary folders, no mirror
