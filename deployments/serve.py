"""`mmpipe serve`: the three deployments, registered and served by one long-running process.

* `retrain`: the pipeline on each configured source, on `serve.retrain_cron` in `serve.timezone`
  (with several sources, each has its own data and runs dirs: see `Config.for_source`).
* `watch`: every `serve.watch_interval_s`, fingerprint the sources and emit `mmpipe.source.changed`
  (resource id `mmpipe.source.<hash of the path>`, the change summary as payload) only when new
  files have arrived and settled, so a burst of files is one event.
* `on-new-data`: the pipeline, started by that event through a DeploymentEventTrigger with the
  source from the event's payload; at most one run at a time (later triggers queue), and the
  pipeline itself holds a lock on its data dir, so a scheduled and a triggered run never overlap.

Schedules and triggers need a real Prefect server (`prefect server start`, then set
PREFECT_API_URL); the temporary server a one-off CLI run starts does not fire them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from mmpipe.config import Config, source_dir_name
from mmpipe.errors import ConfigError


def build_deployments(config: Config) -> list:
    """The RunnerDeployments for `config` (one `retrain` per source, named after it when several)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from flows.pipeline import pipeline_flow
    from flows.watch import SOURCE_CHANGED, watch_flow

    sources = [str(Path(entry.path).absolute()) for entry in config.serve.sources]
    if not sources:
        raise ConfigError("mmpipe serve needs at least one source: set [serve] sources = [\"path/to/manifest.csv\"] "
                          "in mmpipe.toml (or MMPIPE_SERVE__SOURCES='[\"...\"]')")
    config = config.model_copy(update={"data_dir": Path(config.data_dir).absolute(),
                                       "runs_dir": Path(config.runs_dir).absolute()})
    settings = config.model_dump(mode="json")  # deployment parameters are stored as JSON
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    deployments = []
    for source in sources:
        name = "retrain" if len(sources) == 1 else f"retrain-{source_dir_name(source)}"
        deployments.append(pipeline_flow.to_deployment(
            name=name, schedules=[Cron(config.serve.retrain_cron, timezone=config.serve.timezone)],
            parameters={"source": source, "config": settings}, concurrency_limit=one_at_a_time,
            description=f"Retrain on {source} on a schedule", tags=["mmpipe"]))
    skip_if_busy = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    deployments.append(watch_flow.to_deployment(
        name="watch", interval=timedelta(seconds=config.serve.watch_interval_s), parameters={"config": settings},
        concurrency_limit=skip_if_busy,
        description="Fingerprint the sources; emit mmpipe.source.changed when new files settle", tags=["mmpipe"]))
    deployments.append(pipeline_flow.to_deployment(
        name="on-new-data", concurrency_limit=one_at_a_time, parameters={"config": settings}, tags=["mmpipe"],
        description="Run the pipeline on a source when the watcher reports new data",
        triggers=[DeploymentEventTrigger(
            name="mmpipe: new data in a source", expect={SOURCE_CHANGED},
            match={"prefect.resource.id": "mmpipe.source.*"},
            parameters={"source": "{{ event.payload.source }}", "config": settings})]))
    return deployments


def serve_forever(config: Config) -> None:
    """Register the deployments with the configured Prefect server and run their flows until stopped."""
    from prefect import serve

    serve(*build_deployments(config), print_starting_message=True)
