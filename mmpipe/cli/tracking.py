"""`mmpipe tracking sync`: mirror a run store's runs to the MLflow server (those it lacks, or parts of them)."""

from __future__ import annotations

import json

import typer

from mmpipe.cli.common import ConfigOption, JsonOption, PlainFlagsGroup, RunsOption, reading

tracking_app = typer.Typer(help="Mirror runs to MLflow (MLFLOW_TRACKING_URI or [tracking] uri).",
                           no_args_is_help=True, cls=PlainFlagsGroup)


@tracking_app.command("sync")
def tracking_sync(runs: RunsOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Log every finished run of the run store that the MLflow server lacks, oldest first, and move the
    registry alias `champion` to the store's champion.

    Runs and evaluations already logged are not logged again (a run is one MLflow run, found by its tag
    `mmpipe.run_id`), so it is safe to run after any outage, or on a schedule. Exit 2 when no tracking
    server is set or it does not answer.
    """
    from mmpipe.config import load_config
    from mmpipe.tracking import sync_runs

    settings = load_config(config, {"runs_dir": runs})
    with reading(settings.runs_dir) as folder:
        done = sync_runs(folder, settings)
    rows = [{"run_id": run_id, "url": mirrored.url if mirrored else None,
             "model_version": mirrored.model_version if mirrored else None} for run_id, mirrored in done]
    if as_json:
        typer.echo(json.dumps({"tracking_uri": settings.tracking.resolved_uri(), "runs": rows}))
        return
    for row in rows:
        where = row["url"] or "not finished: nothing to log yet"
        typer.echo(f"{row['run_id']}: {where}" + (f" (model version {row['model_version']})"
                                                   if row["model_version"] else ""))
    typer.echo(f"{len([row for row in rows if row['url']])} of {len(rows)} runs on {settings.tracking.resolved_uri()}")
