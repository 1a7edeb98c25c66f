"""Defaults for running flows in-process against a temporary Prefect API server (no PREFECT_API_URL).

The user's own settings always win. The temporary server needs ~20 s to start on 2 cores and
Prefect waits only 20 s by default; its telemetry heartbeat contends for the SQLite lock and logs
errors on slow disks. Used by the CLI, the tests and the benchmarks: set before Prefect is imported.
"""

from __future__ import annotations

import functools
import os

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def prepare_prefect() -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


# Watches this process and the temporary server it started; if this process dies without stopping the server
# (kill -9), the server is stopped too, instead of running on, orphaned.
_REAPER = """
import os, signal, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
while alive(server) and alive(parent):
    time.sleep(0.5)
if alive(server):
    os.kill(server, signal.SIGTERM)
    for _ in range(20):
        time.sleep(0.5)
        if not alive(server):
            break
    else:
        os.kill(server, signal.SIGKILL)
"""


def temporary_server_dies_with_this_process() -> None:
    """When a flow here starts Prefect's temporary API server, start it in a session of its own, and a reaper
    beside it (see _REAPER).

    Its own session: a terminal's Ctrl-C goes to the whole foreground process group, and it stopped the server
    too; the interrupted command then retried forever to tell the dead server its flow run had crashed (seen:
    `mmpipe ingest`, `mmpipe score` hung after Ctrl-C). Out of the group, the server hears the command's
    interruption and is stopped by Prefect at the command's exit, or by the reaper: a killed process never gets
    to stop it, and the orphaned server (~250 MB) would run until someone finds it. Only when no PREFECT_API_URL
    is set: otherwise no server starts.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    import subprocess
    import sys
    import types

    from prefect.server.api import server as prefect_server
    from prefect.server.api.server import SubprocessASGIServer

    start = SubprocessASGIServer._run_uvicorn_command
    if getattr(start, "mmpipe_reaped", False):
        return
    # What the server's start sees as `subprocess`: the same module, with Popen starting a new session.
    own_session = types.SimpleNamespace(**{**vars(subprocess), "Popen": functools.partial(subprocess.Popen,
                                                                                          start_new_session=True)})

    def start_with_reaper(self):
        prefect_server.subprocess = own_session
        try:
            server = start(self)
        finally:
            prefect_server.subprocess = subprocess
        subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), str(server.pid)], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return server

    start_with_reaper.mmpipe_reaped = True
    SubprocessASGIServer._run_uvicorn_command = start_with_reaper


def load_storage_secret(config) -> None:
    """Set the storage variables kept in the Prefect Secret block `config.storage_secret`, if one is named: how a
    worker gets bucket credentials without them in mmpipe.toml or the deployment."""
    if not config.storage_secret:
        return
    from prefect.blocks.system import Secret

    from mmpipe.errors import ConfigError
    from mmpipe.storage.urls import use_credentials

    try:
        values = Secret.load(config.storage_secret).get()
    except ValueError:
        raise ConfigError(f"storage_secret: no Secret block named {config.storage_secret!r} on the Prefect server; "
                          "create it (prefect.blocks.system.Secret(value={...}).save(NAME)) or unset storage_secret"
                          ) from None
    use_credentials(values, f"the Secret block {config.storage_secret!r}")
