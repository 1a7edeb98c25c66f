"""`mmpipe serve` against a real `prefect server start` on loopback: registration, schedule, exactly one
pipeline run for a burst of arriving files (its watcher is a thread, not a flow run per poll), and no
silent takeover of the deployments `prefect deploy` made for a work pool."""

import contextlib
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.deployments.conftest import BIN, api, native_lines, request, stop, wait_for
from tests.fixtures.datasets import SAMPLE_CLASSES

pytestmark = pytest.mark.slow(seconds=25)  # starts a real Prefect server and a serving process

WATCH_INTERVAL_S = 3


def delete_deployments(url) -> None:
    """A clean server for the next test: the session's server is shared."""
    for deployment in api(url, "/deployments/filter"):
        request("DELETE", f"{url}/deployments/{deployment['id']}")


def write_config(path: Path, source: Path, root: Path) -> Path:
    path.write_text(f"""
data_dir = "{root / 'data'}"
runs_dir = "{root / 'runs'}"
[image]
size = 16
[ingest]
classes = {json.dumps(SAMPLE_CLASSES)}
chunk_rows = 8
[contracts]
split_tolerance = 0.25
[model]
max_tokens = 100
sequence_length = 8
embedding_dim = 8
lstm_units = 8
conv_filters = [4, 8]
dense_units = 8
[train]
epochs = 1
batch_size = 16
export_serving = false
[serve]
sources = ["{source / 'manifest.csv'}"]
retrain_cron = "30 3 * * *"
timezone = "Europe/Berlin"
watch_interval_s = {WATCH_INTERVAL_S}
""")
    return path


def arrive_in_a_burst(sample_manifest: Path, source: Path) -> None:
    """Images one by one, faster than the watcher polls, then the manifest: one burst."""
    (source / "images").mkdir(parents=True)
    for image in sorted((sample_manifest.parent / "images").iterdir()):
        shutil.copy(image, source / "images" / image.name)
        time.sleep(0.1)
    shutil.copy(sample_manifest, source / "manifest.csv")


def watched_again(data_dir: Path, polls: int) -> None:
    """Wait (with a deadline, not a fixed sleep) until the watcher has looked at the source `polls` more times:
    each poll rewrites its state file atomically, so each is a new inode."""
    (state,) = (data_dir / "watch").glob("*.json")
    seen = {state.stat().st_ino}

    def polled():
        with contextlib.suppress(FileNotFoundError):
            seen.add(state.stat().st_ino)
        return len(seen) > polls

    wait_for(polled, 120, f"{polls} more polls of the source", every=0.05)


@pytest.mark.timeout(900)
def test_serve_registers_schedule_and_runs_once_per_burst(prefect_server, sample_manifest, tmp_path):
    url, env = prefect_server
    delete_deployments(url)
    started = datetime.now(UTC).isoformat()
    source = tmp_path / "source"
    source.mkdir()
    config = write_config(tmp_path / "mmpipe.toml", source, tmp_path)
    # The runner looks for due runs every 10 s by default; 2 s keeps the test short.
    env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with open(tmp_path / "serve.log", "w") as log:
        serving = subprocess.Popen([str(BIN / "mmpipe"), "serve", "--config", str(config)], env=env, cwd=tmp_path,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    def registered():
        if serving.poll() is not None:
            pytest.fail(f"mmpipe serve exited: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        found = {d["name"]: d for d in api(url, "/deployments/filter")}
        return found if len(found) == 2 else None

    try:
        deployments = wait_for(registered, 180, "two deployments")
        assert set(deployments) == {"retrain", "on-new-data"}  # no `watch` deployment: no flow run per poll
        schedule = deployments["retrain"]["schedules"][0]["schedule"]
        assert (schedule["cron"], schedule["timezone"]) == ("30 3 * * *", "Europe/Berlin")
        arrive_in_a_burst(sample_manifest, source)
        on_new_data = {"flow_runs": {"deployment_id": {"any_": [deployments["on-new-data"]["id"]]}}}
        finished = wait_for(lambda: [run for run in api(url, "/flow_runs/filter", on_new_data)
                                     if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")],
                            600, "the on-new-data pipeline run")
        watched_again(tmp_path / "data", polls=3)  # more polls of the unchanged source: no second run
        runs = api(url, "/flow_runs/filter", on_new_data)
        assert [run["state_type"] for run in runs] == ["COMPLETED"], (tmp_path / "serve.log").read_text()[-3000:]
        assert finished[0]["parameters"]["source"] == str(source / "manifest.csv")
        assert any((tmp_path / "runs").glob("*/report.html"))
        ran = {"parent_task_run_id": {"is_null_": True}, "expected_start_time": {"after_": started},
               "state": {"type": {"not_any_": ["SCHEDULED"]}}}  # not the nightly retrain runs scheduled ahead
        assert len(api(url, "/flow_runs/filter", {"flow_runs": ran})) == 1  # polls are not flow runs
        assert (tmp_path / "serve.log").read_text().count("-> emitted mmpipe.source.changed") == 1
        assert native_lines(tmp_path / "serve.log") == []  # TensorFlow's C++ lines: not from the flow run either
    finally:
        stop(serving)


def test_serve_refuses_to_take_over_a_work_pool_deployment(prefect_server, tmp_path):
    """After `prefect deploy` of deployments/prefect.yaml, serving the same names would leave their work pool set
    and every run the worker picked up would crash: one line that says what to do instead."""
    url, env = prefect_server
    delete_deployments(url)
    api(url, "/work_pools/", {"name": "a-pool", "type": "process"})
    flow = api(url, "/flows/", {"name": "pipeline"})
    api(url, "/deployments/", {"name": "retrain", "flow_id": flow["id"], "work_pool_name": "a-pool"})
    (tmp_path / "mmpipe.toml").write_text(f'[serve]\nsources = ["{tmp_path / "manifest.csv"}"]\n')
    done = subprocess.run([str(BIN / "mmpipe"), "serve", "--config", str(tmp_path / "mmpipe.toml")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    for words in ("pipeline/retrain (work pool a-pool)", "prefect deployment delete pipeline/retrain", "worker"):
        assert words in done.stderr
    assert [d["work_pool_name"] for d in api(url, "/deployments/filter")] == ["a-pool"]  # left as it was
    delete_deployments(url)
