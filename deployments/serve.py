"""`mmpipe serve`: two deployments and the source watcher, in one long-running process.

* `retrain`: the pipeline on each configured source, on `serve.retrain_cron` in `serve.timezone`
  (with several sources, one `retrain-<name>-<hash>` each, and each source has its own data and
  runs dirs: see `Config.for_source`).
* `on-new-data` (`serve.retrain_on` has "new_data", the default): the pipeline, started by the event
  `mmpipe.source.changed` through a DeploymentEventTrigger with the source from the event's payload; at
  most one run at a time (later triggers queue), and the pipeline itself holds a lock on its data dir, so
  a scheduled and a triggered run never overlap.
* `on-drift` (`serve.retrain_on` has "drift"; `on-drift-<name>-<hash>` per source when several): the
  pipeline on a source, started by `mmpipe.drift.detected` when data scored by that source's run drifted
  (the event's resource label `mmpipe.model-source`).
* `score-on-arrival` (with `[serve] score_sources`): the score flow on data to score, started by its
  `mmpipe.source.changed` (resource `mmpipe.scored.*`), scored by its model source's champion.
* The watcher, a thread of this process (not a deployment: a flow run per poll buried the real runs
  in the UI): every `serve.watch_interval_s` it fingerprints the sources and emits the event only
  when new files have arrived and settled, so a burst of files is one event and one pipeline run.

Schedules and triggers need a real Prefect server (`prefect server start`, then set
PREFECT_API_URL); the temporary server a one-off CLI run starts does not fire them. Deployments of
the same names that `prefect deploy` made for a work pool are never taken over: serving them here
would leave their work pool set, and every run a worker picked up would crash.
"""

from __future__ import annotations

import threading

from mmpipe.config import Config, source_dir_name
from mmpipe.errors import MmpipeError
from mmpipe.storage.urls import absolute


def build_deployments(config: Config) -> list:
    """The RunnerDeployments for `config` (one `retrain` per source, named after it when several)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from flows.pipeline import pipeline_flow
    from flows.score import DRIFT_DETECTED, MODEL_SOURCE_LABEL, score_flow
    from flows.watch import SOURCE_CHANGED

    config = absolute_paths(config)
    sources = [entry.path for entry in config.serve.sources]
    settings = config.model_dump(mode="json")  # deployment parameters are stored as JSON
    one_at_a_time = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    deployments = []
    for source in sources:
        name = "retrain" if len(sources) == 1 else f"retrain-{source_dir_name(source)}"
        deployments.append(pipeline_flow.to_deployment(
            name=name, schedules=[Cron(config.serve.retrain_cron, timezone=config.serve.timezone)],
            parameters={"source": source, "config": settings}, concurrency_limit=one_at_a_time,
            description=f"Retrain on {source} on a schedule", tags=["mmpipe"]))
    # The trigger passes only the source: a run's other parameters (the config) are the deployment's.
    if "new_data" in config.serve.retrain_on:
        deployments.append(pipeline_flow.to_deployment(
            name="on-new-data", concurrency_limit=one_at_a_time, parameters={"config": settings}, tags=["mmpipe"],
            description="Run the pipeline on a source when the watcher reports new data",
            triggers=[DeploymentEventTrigger(
                name="mmpipe: new data in a source", expect={SOURCE_CHANGED},
                match={"prefect.resource.id": "mmpipe.source.*"},
                parameters={"source": "{{ event.payload.source }}"})]))
    if "drift" in config.serve.retrain_on:
        for source in sources:
            name = "on-drift" if len(sources) == 1 else f"on-drift-{source_dir_name(source)}"
            deployments.append(pipeline_flow.to_deployment(
                name=name, concurrency_limit=one_at_a_time, parameters={"source": source, "config": settings},
                tags=["mmpipe"], description=f"Retrain on {source} when data its champion scored drifted",
                triggers=[DeploymentEventTrigger(
                    name=f"mmpipe: drift in data scored by {source}'s run", expect={DRIFT_DETECTED},
                    match={"prefect.resource.id": "mmpipe.scored.*", MODEL_SOURCE_LABEL: source})]))
    if config.serve.score_sources:
        deployments.append(score_flow.to_deployment(
            name="score-on-arrival", concurrency_limit=one_at_a_time, parameters={"config": settings},
            tags=["mmpipe"], description="Score new data with the champion when the watcher reports it",
            triggers=[DeploymentEventTrigger(
                name="mmpipe: new data to score", expect={SOURCE_CHANGED},
                match={"prefect.resource.id": "mmpipe.scored.*"},
                parameters={"source": "{{ event.payload.source }}",
                            "model_source": "{{ event.payload.model_source }}"})]))
    return deployments


def absolute_paths(config: Config) -> Config:
    """`config` with its sources, data and runs dirs made absolute here, where `mmpipe serve` runs."""
    config.serve.require_sources("mmpipe serve")
    sources = [entry.model_copy(update={"path": str(absolute(entry.path))}) for entry in config.serve.sources]
    scored = [entry.model_copy(update={"path": str(absolute(entry.path)),
                                       "model_source": config.serve.scored_by(entry)})
              for entry in config.serve.score_sources]
    return config.model_copy(update={"data_dir": absolute(config.data_dir),
                                     "runs_dir": absolute(config.runs_dir),
                                     "serve": config.serve.model_copy(update={"sources": sources,
                                                                             "score_sources": scored})})


def refuse_worker_deployments(deployments: list) -> None:
    """Raise if a deployment of the same name already belongs to a work pool (made by `prefect deploy`).

    Serving would register it again but keep its work pool: the worker would then pick up its runs
    and crash on flow code it cannot download.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    taken = []
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            full_name = f"{deployment.flow_name}/{deployment.name}"
            try:
                existing = client.read_deployment_by_name(full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                taken.append((full_name, existing.work_pool_name))
    if taken:
        names = ", ".join(f"{name} (work pool {pool})" for name, pool in taken)
        several = len(taken) > 1
        deployment, it, belongs = ("deployments", "them", "belong") if several else ("deployment", "it", "belongs")
        deletes = "; ".join(f"prefect deployment delete {name}" for name, _ in taken)
        raise MmpipeError(f"{deployment} {names} {belongs} to a work pool (made by `prefect deploy`), and mmpipe serve "
                          f"will not take {it} over: keep using the worker (see deployments/prefect.yaml), or delete "
                          f"{it} first: {deletes}")


def serve_forever(config: Config) -> None:
    """Register the deployments with the configured Prefect server, watch the sources in a thread, and run the
    deployments' flows until stopped."""
    from prefect import serve

    from flows.watch import watch_and_announce

    deployments = build_deployments(config)
    refuse_worker_deployments(deployments)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_and_announce, name="mmpipe-watch", daemon=True,
                               args=(absolute_paths(config), stop, lambda line: print(line, flush=True)))
    watcher.start()
    try:
        serve(*deployments, print_starting_message=True)
    finally:
        stop.set()
        watcher.join(timeout=10)
