"""The whole pipeline: run, demo, sample, serve."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from mmpipe.cli.common import (
    EXIT_FAILED_CHECK,
    ConfigOption,
    ContractsOption,
    DaskOption,
    DataOption,
    JsonOption,
    RunsOption,
    run_flow,
    start_prefect,
)
from mmpipe.cli.output import ProgressBar, print_notice, print_pipeline_summary
from mmpipe.errors import ContractViolation, MmpipeError
from mmpipe.wording import counted


def run_command(
    source: Annotated[str, typer.Argument(help="A manifest (.csv, .jsonl, .parquet) or a folder `LABEL/FILE`; a "
                                          "file or folder, or a bucket URL (s3://, gs://, az://).",
                                          show_default=False)],
    data: DataOption = None,
    runs: RunsOption = None,
    contracts: ContractsOption = None,
    config: ConfigOption = None,
    dask: DaskOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the whole pipeline: ingest -> validate -> train -> evaluate -> promote.

    One Prefect flow run (`pipeline`) with a subflow run per stage, so the UI shows each stage's
    logs and artifacts. On a data dir's first run the source contracts are inferred from the data
    (and said so); later versions are checked against them. A critical data-contract failure
    stops it before training (exit 1). Exit status: 0 done, 1 the data failed its contracts,
    2 unusable input.

    SOURCE, --data and --runs may be bucket URLs (needs `pip install mmpipe[s3]`, `[gcs]` or `[azure]`);
    endpoint and credentials come from the usual variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*).
    """
    from mmpipe.config import load_config
    from mmpipe.ingest.sources import open_source

    settings = load_config(config, {"data_dir": data, "runs_dir": runs, "ingest.dask_address": dask,
                                    "contracts.suites_dir": contracts})
    if settings.storage_secret:
        from flows.environment import load_storage_secret

        start_prefect()
        load_storage_secret(settings)
    open_source(source)
    summary = run_pipeline(source, settings, quiet=as_json)
    if as_json:
        typer.echo(json.dumps(summary))
        print_notice(summary["validation"])
        return
    print_pipeline_summary(summary)


def demo(
    folder: Annotated[Path, typer.Argument(help="Folder for the sample, its data dir and runs dir.")] = Path(
        "mmpipe-demo"),
    rows: Annotated[int | None, typer.Option(min=40, show_default=False, help="Rows in the generated sample "
                                             "(default 1,000: what the default model needs to learn its shapes).")
                    ] = None,
) -> None:
    """Generate the sample dataset and run the whole pipeline on it; prints where the report is.

    Writes FOLDER/sample (raw files and the mmpipe.toml the run used), FOLDER/data (shards),
    FOLDER/runs (the run, its report and serving export). About a minute on a 2-core laptop, CPU
    only: the sample's images are 48-128 px stored at 32 px, and early stopping ends training well before
    its 30-epoch cap.
    """
    from mmpipe.config import load_config
    from mmpipe.sample import DEMO, write_sample

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise MmpipeError(f"{folder} exists and is not an empty folder; choose a new folder for the demo")
    manifest = write_sample(folder / "sample", dataclasses.replace(DEMO, rows=rows or DEMO.rows))
    typer.echo(f"wrote the sample: {manifest}")
    settings = load_config(folder / "sample" / "mmpipe.toml",
                           {"data_dir": folder / "data", "runs_dir": folder / "runs"})
    summary = run_pipeline(manifest, settings, quiet=False)
    print_pipeline_summary(summary)
    image = min((folder / "sample" / "images").iterdir())
    typer.echo(f"next: mmpipe runs list --runs {folder / 'runs'}")
    typer.echo(f"      mmpipe predict --runs {folder / 'runs'} --text 'a lantern at night' --image {image}")


def run_pipeline(source: str | Path, settings, quiet: bool) -> dict:
    start_prefect()
    from flows.pipeline import pipeline_flow
    from mmpipe.storage.urls import absolute

    try:
        with ProgressBar("Pipeline", quiet=quiet):
            return run_flow(lambda: pipeline_flow(str(absolute(source)), settings))
    except ContractViolation as violation:
        typer.echo(f"mmpipe: the dataset failed its data contracts; nothing was trained: {violation}", err=True)
        raise typer.Exit(EXIT_FAILED_CHECK) from None


def serve(
    data: DataOption = None,
    runs: RunsOption = None,
    config: ConfigOption = None,
) -> None:
    """Register and serve the deployments, and watch the sources, until stopped (Ctrl-C).

    `retrain` runs the pipeline on each `[serve] sources` entry on `serve.retrain_cron` (default
    nightly, `serve.timezone`). A watcher in this process looks at the sources every
    `serve.watch_interval_s` and, once new files have settled, emits `mmpipe.source.changed` (in
    the UI's Event Feed) and prints a line; `on-new-data` runs the pipeline on that event, one run
    at a time. With `serve.retrain_on` "drift", `on-drift` retrains a source when data its champion
    scored drifted; `[serve] score_sources` are watched too and scored on arrival (`score-on-arrival`).
    A change stays pending until a run over it completes, and is announced again when the watcher
    starts. Needs a Prefect server: `prefect server start`, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`. Refuses to take over deployments of the
    same names that `prefect deploy` made for a work pool (deployments/prefect.yaml): use that
    worker, or delete them first.
    """
    from mmpipe.config import load_config

    settings = load_config(config, {"data_dir": data, "runs_dir": runs})
    require_prefect_server("mmpipe serve")
    from deployments.serve import serve_forever

    serve_forever(settings)


def watch(
    data: DataOption = None,
    runs: RunsOption = None,
    config: ConfigOption = None,
) -> None:
    """Watch the `[serve] sources` and emit `mmpipe.source.changed` once new files have settled, until Ctrl-C.

    For a work pool and workers (deployments/prefect.yaml): run it next to the worker, in the same
    checkout and with the same config, so the `on-new-data` deployment retrains when data arrives.
    Every `serve.watch_interval_s` it lists each source's folder (sizes, mtimes, the sha256 of new
    files) or bucket prefix (sizes, ETags); a burst of files is one event, after its last file
    landed, and one line here. What it has seen is kept in `DATA/watch/` (a bucket data dir's in its
    local mirror), so a restart does not announce old files again, and a change no run has completed
    yet is announced again when it starts. `[serve] score_sources` are watched too (their changes start
    `score-on-arrival`). `mmpipe serve` runs the same watcher itself. Needs a Prefect server
    (`PREFECT_API_URL`).
    """
    import threading

    from mmpipe.config import load_config

    settings = load_config(config, {"data_dir": data, "runs_dir": runs})
    settings.serve.require_sources("mmpipe watch")
    require_prefect_server("mmpipe watch")
    from flows.watch import SOURCE_CHANGED, watch_and_announce
    from mmpipe.storage.urls import absolute

    sources = ", ".join(str(absolute(entry.path)) for entry in settings.serve.sources)
    typer.echo(f"watching {sources} every {settings.serve.watch_interval_s:g} s; new data emits {SOURCE_CHANGED} "
               "(Ctrl-C to stop)")
    try:
        watch_and_announce(settings, threading.Event(), typer.echo)
    except KeyboardInterrupt:
        typer.echo("stopped watching")


def require_prefect_server(command: str) -> None:
    """Schedules, triggers and events need a real server, never a temporary one; fail in one line if none answers."""
    import os

    from mmpipe.cli.terminal import check_prefect_api

    if not os.environ.get("PREFECT_API_URL"):
        raise MmpipeError(f"{command} needs a Prefect server (schedules, triggers and events do not work on a "
                          "temporary one): run `prefect server start` and "
                          "`export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    check_prefect_api()


def sample(
    folder: Annotated[Path, typer.Argument(help="Folder to write manifest.csv, images/ and mmpipe.toml into.",
                                           show_default=False)],
    rows: Annotated[int, typer.Option(min=1, help="Number of rows before faults are added.")] = 500,
    seed: Annotated[int, typer.Option(help="Same seed, same files.")] = 0,
) -> None:
    """Write a synthetic raw dataset: images of mixed formats, captions, and a few percent of faults.

    The label needs both inputs: the image shows a circle or a square, the caption says day or
    night (sun, moon, window, lantern).
    """
    from mmpipe.sample import SampleSpec, write_sample

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise MmpipeError(f"{folder} exists and is not an empty folder; choose a new folder for the sample")
    manifest = write_sample(folder, SampleSpec(rows=rows, seed=seed))
    typer.echo(f"wrote {manifest} ({counted(rows, 'row')} + faults) and {folder / 'mmpipe.toml'}")
    typer.echo(f"next: mmpipe ingest {manifest} --config {folder / 'mmpipe.toml'}")
