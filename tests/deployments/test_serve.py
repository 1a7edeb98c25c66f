"""`mmpipe serve` against a real `prefect server start` on loopback: registration, schedule, and
exactly one pipeline run for a burst of arriving files. Starts and stops its own server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.datasets import SAMPLE_CLASSES

pytestmark = pytest.mark.slow  # starts a real Prefect server and a serving process

BIN = Path(sys.executable).parent
WATCH_INTERVAL_S = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real Prefect server (scheduler and triggers on) with its own home and database."""
    home = tmp_path_factory.mktemp("prefect-server")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    port = free_port()
    with open(home / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                    str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"

    def healthy():
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None and pytest.fail((home / "server.log").read_text()[-2000:])

    try:
        wait_for(healthy, 180, "prefect server start")
        yield url, {**env, "PREFECT_API_URL": url}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def api(url, path, body=None):
    response = httpx.post(f"{url}{path}", json=body or {}, timeout=10)
    response.raise_for_status()
    return response.json()


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


@pytest.mark.timeout(900)
def test_serve_registers_schedule_and_runs_once_per_burst(server, sample_manifest, tmp_path):
    url, env = server
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
        return found if len(found) == 3 else None

    try:
        deployments = wait_for(registered, 180, "three deployments")
        assert set(deployments) == {"retrain", "watch", "on-new-data"}
        schedule = deployments["retrain"]["schedules"][0]["schedule"]
        assert (schedule["cron"], schedule["timezone"]) == ("30 3 * * *", "Europe/Berlin")
        arrive_in_a_burst(sample_manifest, source)
        on_new_data = {"flow_runs": {"deployment_id": {"any_": [deployments["on-new-data"]["id"]]}}}
        finished = wait_for(lambda: [run for run in api(url, "/flow_runs/filter", on_new_data)
                                     if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")],
                            600, "the on-new-data pipeline run")
        time.sleep(3 * WATCH_INTERVAL_S)  # more polls of the unchanged source: no second run
        runs = api(url, "/flow_runs/filter", on_new_data)
        assert [run["state_type"] for run in runs] == ["COMPLETED"], (tmp_path / "serve.log").read_text()[-3000:]
        assert finished[0]["parameters"]["source"] == str(source / "manifest.csv")
        assert any((tmp_path / "runs").glob("*/report.html"))
    finally:
        os.killpg(serving.pid, signal.SIGINT)
        try:
            serving.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
