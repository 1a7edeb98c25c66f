"""The `prefect deploy` build step of deployments/prefect.yaml: mmpipe's config, read once at deploy time.

The yaml then repeats nothing: its deployments' parameters, schedule and sources all come from here,
the same config `mmpipe serve` and `mmpipe watch` read, so the paths cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmpipe.config import load_config
from mmpipe.storage.urls import absolute


def read_mmpipe_config() -> dict[str, Any]:
    """$MMPIPE_CONFIG or ./mmpipe.toml, then MMPIPE_* variables, as `{{ mmpipe.* }}` values for the yaml.

    `checkout` is this folder, the pull step's directory. (`{{ $PWD }}` would be resolved at deploy time too,
    but from a variable that a process started in another folder inherits stale.)
    Paths in the config stay as configured: relative ones resolve in the checkout when a run starts.
    """
    config = load_config(None)
    sources = config.serve.require_sources("deployments/prefect.yaml")
    return {"checkout": str(Path.cwd()), "config": config.model_dump(mode="json"), "source": sources[0],
            "sources": sources, "retrain_cron": config.serve.retrain_cron, "timezone": config.serve.timezone,
            # what a drift event names the source by: its absolute path (relative ones resolve in the checkout)
            "source_path": str(absolute(sources[0])),
            "retrain_on_new_data": "new_data" in config.serve.retrain_on,
            "retrain_on_drift": "drift" in config.serve.retrain_on}
