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
