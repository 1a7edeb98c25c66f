"""One real `prefect server start` (scheduler, triggers, event feed) for the deployment tests that need it,
with its own home and database; started on first use, stopped at the end of the session."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent  # the console scripts (`prefect`, `mmpipe`) of this environment
ROOT = Path(__file__).resolve().parents[2]  # the checkout: where the instructions say to run things


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check, timeout, what, every=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def native_lines(log: Path) -> list[bytes]:
    """TensorFlow's C++ log lines in a process's output (a worker's, `mmpipe serve`'s)."""
    from mmpipe.native_logs import NATIVE_LOG_LINE

    return [line for line in log.read_bytes().splitlines() if NATIVE_LOG_LINE.search(line)]


def request(method: str, url: str, **options) -> httpx.Response:
    """An HTTP call to the test server, retried the way Prefect's own client retries: a 503 is the server
    saying that it is busy (its database locked under load) and to ask again."""
    for attempt in range(6):
        response = httpx.request(method, url, timeout=10, **options)
        if response.status_code != 503:
            break
        time.sleep(0.5 * 2 ** attempt)
    response.raise_for_status()
    return response


def api(url, path, body=None):
    return request("POST", f"{url}{path}", json=body or {}).json()


def stop(process: subprocess.Popen, sig=signal.SIGINT) -> None:
    """Stop a process started with start_new_session=True, and whatever it started."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """(API URL, environment for subprocesses that talk to it); nothing of the caller's Prefect settings leaks in."""
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
        stop(process, signal.SIGTERM)
