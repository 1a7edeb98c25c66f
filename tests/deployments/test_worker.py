"""deployments/prefect.yaml as shipped, done the way its header says, against a real server: a process work
pool, a worker and `mmpipe watch` started in this checkout, `prefect deploy`, one `retrain` run to Completed."""

import json
import subprocess

import pytest

from flows.watch import SOURCE_CHANGED, source_resource
from mmpipe.ingest.watch import pending_change
from tests.deployments.conftest import BIN, ROOT, api, native_lines, request, stop, wait_for
from tests.fixtures.files import darkened_copy

pytestmark = pytest.mark.slow(seconds=70)  # a Prefect server, a worker, and a pipeline run that trains a model

FINISHED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
TINY_MODEL = {"MMPIPE_IMAGE__SIZE": "16", "MMPIPE_TRAIN__EPOCHS": "1", "MMPIPE_TRAIN__BATCH_SIZE": "16",
              "MMPIPE_TRAIN__EXPORT_SERVING": "false", "MMPIPE_MODEL__LSTM_UNITS": "8",
              "MMPIPE_MODEL__EMBEDDING_DIM": "8", "MMPIPE_MODEL__DENSE_UNITS": "8", "MMPIPE_MODEL__MAX_TOKENS": "100",
              "MMPIPE_MODEL__CONV_FILTERS": "[4, 8]", "MMPIPE_CONTRACTS__SPLIT_TOLERANCE": "0.25",
              "MMPIPE_EVALUATE__MIN_GAIN_OVER_MAJORITY": "-1"}


def get(url, path):
    return request("GET", f"{url}{path}").json()


def shell(args, env, what):
    """Run a command in the checkout, as a user would; fail with its output."""
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def source_events(url, source):
    """The `mmpipe.source.changed` events the server holds about `source` (the session's server is shared)."""
    resource = source_resource(str(source))["prefect.resource.id"]
    body = {"filter": {"event": {"name": [SOURCE_CHANGED]}, "resource": {"id": [resource]}}, "limit": 50}
    return api(url, "/events/filter", body)["events"]


@pytest.mark.timeout(900)
def test_the_shipped_prefect_yaml_runs_the_pipeline_on_a_process_worker(prefect_server, tmp_path):
    url, server_env = prefect_server
    sample = tmp_path / "sample"
    env = {key: value for key, value in server_env.items() if not key.startswith("MMPIPE_")}
    # What the user's shell holds: mmpipe's config in variables (the commands run in the checkout).
    env.update(TINY_MODEL, MMPIPE_CONFIG=str(sample / "mmpipe.toml"),
               MMPIPE_SERVE__SOURCES=json.dumps([str(sample / "manifest.csv")]),
               MMPIPE_DATA_DIR=str(tmp_path / "data"), MMPIPE_RUNS_DIR=str(tmp_path / "runs"),
               MMPIPE_SERVE__WATCH_INTERVAL_S="1", MMPIPE_SERVE__RETRAIN_ON='["new_data", "drift"]',
               MMPIPE_SCORE__OUT_DIR=str(tmp_path / "scores"),
               PREFECT_WORKER_QUERY_SECONDS="2")  # the worker looks for due runs every 2 s instead of 10
    shell([str(BIN / "mmpipe"), "sample", str(sample), "--rows", "40"], env, "mmpipe sample")
    shell([str(BIN / "prefect"), "work-pool", "create", "mmpipe-pool", "--type", "process"], env, "work-pool create")
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "watch")}
    with open(logs["worker"], "w") as worker_log, open(logs["watch"], "w") as watch_log:
        # Started elsewhere on purpose: the pull step, not the worker's folder, puts runs in the checkout.
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "mmpipe-pool"], cwd=tmp_path,
                                  env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
        watcher = subprocess.Popen([str(BIN / "mmpipe"), "watch"], cwd=ROOT, env=env, stdout=watch_log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The sample is new to the watcher: one event once it has looked twice (before on-new-data exists,
        # so the one pipeline run of this test is the retrain run below).
        manifest = sample / "manifest.csv"
        events = wait_for(lambda: source_events(url, manifest), 120, f"the event: {logs['watch'].read_text()}")
        assert events[0]["payload"]["source"] == str(manifest)
        shell([str(BIN / "prefect"), "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], env,
              "prefect deploy")
        retrain = get(url, "/deployments/name/pipeline/retrain")
        assert retrain["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]  # this checkout
        assert retrain["parameters"]["config"]["data_dir"] == str(tmp_path / "data")
        run = api(url, f"/deployments/{retrain['id']}/create_flow_run")

        def finished():
            if worker.poll() is not None:
                pytest.fail(f"the worker exited: {logs['worker'].read_text()[-3000:]}")
            state = get(url, f"/flow_runs/{run['id']}")["state"]
            return state if state["type"] in FINISHED else None

        state = wait_for(finished, 600, "the retrain run")
        assert state["type"] == "COMPLETED", (f"{state['type']}: {state['message']}\nworker:\n"
                                              f"{logs['worker'].read_text()[-4000:]}")
        assert any((tmp_path / "runs").glob("*/report.html"))
        assert pending_change(manifest, tmp_path / "data") is None  # the run over the announced data completed it
        # Darkened data scored by the champion drifts: `on-drift` retrains the source on the worker.
        scored = json.loads(shell([str(BIN / "mmpipe"), "score", str(darkened_copy(manifest, tmp_path / "dark")),
                                   "--json"], env, "mmpipe score"))
        assert scored["drift"]["features"]["brightness"]["drifted"], scored["drift"]
        on_drift = get(url, "/deployments/name/pipeline/on-drift")
        retrained = wait_for(lambda: [run for run in api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {
            "any_": [on_drift["id"]]}}}) if run["state_type"] in FINISHED], 600, "the on-drift run")
        assert retrained[0]["state_type"] == "COMPLETED", logs["worker"].read_text()[-4000:]
        assert retrained[0]["parameters"]["source"] == str(manifest)
        assert len(source_events(url, manifest)) == 1  # unchanged, and the run wrote nothing in it: no new event
        assert logs["watch"].read_text().count("-> emitted mmpipe.source.changed") == 1
        # The flow run's process kept TensorFlow's C++ lines out of the worker's output (flows/__init__.py).
        assert native_lines(logs["worker"]) == [], logs["worker"].read_text()[-3000:]
    finally:
        stop(watcher)
        stop(worker)
