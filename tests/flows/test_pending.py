"""At-least-once triggers, with a real kill: a pipeline run killed halfway leaves the new data pending, a watcher
that starts again announces it again, and a run that completes over it ends that."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.pipeline import pipeline_flow
from mmpipe.config import load_config
from mmpipe.ingest.watch import pending_change, poll, watch_sources
from tests.deployments.test_worker import TINY_MODEL
from tests.fixtures.datasets import SAMPLE_CLASSES

pytestmark = pytest.mark.slow  # a pipeline killed while it trains, then one to the end


class Once:
    """A stop event for `watch_sources` that ends it after its first round."""

    def is_set(self):
        return False

    def wait(self, seconds):
        self.is_set = lambda: True


def test_a_killed_run_leaves_its_change_pending_until_a_run_over_it_completes(prefect_api, sample_manifest, tmp_path):
    from prefect.settings import get_current_settings

    source = Path(shutil.copytree(sample_manifest.parent, tmp_path / "source")) / "manifest.csv"
    data, runs = tmp_path / "data", tmp_path / "runs"
    environment = {**TINY_MODEL, "MMPIPE_INGEST__CLASSES": f'{list(SAMPLE_CLASSES)}'.replace("'", '"'),
                   "MMPIPE_SERVE__SOURCES": f'["{source}"]', "MMPIPE_DATA_DIR": str(data),
                   "MMPIPE_RUNS_DIR": str(runs)}
    config = load_config(None, environ=environment)
    poll(source, data)
    assert poll(source, data)[0] == "changed"  # what the watcher announced: pending until a run completes it
    announced = pending_change(source, data)["fingerprint"]
    # `mmpipe run` on it, killed (-9) once it trains: no run completed over the change.
    command = [str(Path(sys.executable).parent / "mmpipe"), "run", str(source)]
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("MMPIPE_")}, **environment,
           "PREFECT_API_URL": str(get_current_settings().api.url), "MMPIPE_TRAIN__EPOCHS": "30"}
    killed = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    while not any(runs.glob("*/run.json")) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert killed.poll() is None, killed.stderr.read().decode()[-2000:]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert pending_change(source, data)["fingerprint"] == announced
    again = []
    watch_sources(config, again.append, Once(), lambda *problem: pytest.fail(f"cannot watch: {problem}"))
    assert [(change["source"], change["again"]) for change in again] == [(str(source), True)]  # announced again
    # The run the new announcement starts completes: the change is done, and the next watcher is quiet.
    state = pipeline_flow(str(source), config, return_state=True)
    assert state.is_completed(), state.message
    assert pending_change(source, data) is None
    quiet = []
    watch_sources(config, quiet.append, Once(), lambda *problem: None)
    assert quiet == []
