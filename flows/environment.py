"""Defaults for running flows in-process against a temporary Prefect API server (no PREFECT_API_URL).

The user's own settings always win. The temporary server needs ~20 s to start on 2 cores and
Prefect waits only 20 s by default; its telemetry heartbeat contends for the SQLite lock and logs
errors on slow disks. Used by the CLI, the tests and the benchmarks: set before Prefect is imported.
"""

from __future__ import annotations

import os

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def prepare_prefect() -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
