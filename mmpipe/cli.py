"""The `mmpipe` command. Heavy imports (prefect, tensorflow, great_expectations) happen inside
commands, so `mmpipe --help` answers at once."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mmpipe.errors import ContractViolation, MmpipeError

# Defaults for the temporary Prefect API server a CLI run starts when no PREFECT_API_URL is set
# (the user's own settings win): it needs ~20 s to start on 2 cores and Prefect waits only 20 s;
# its telemetry heartbeat contends for the SQLite lock and logs errors on slow disks.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
EXIT_FAILED_CHECK = 1
EXIT_UNUSABLE_INPUT = 2

app = typer.Typer(
    name="mmpipe",
    help="Raw text + image data in; clean, versioned Parquet shards out, orchestrated by Prefect.\n\n"
    "Start with `mmpipe sample demo` then `mmpipe ingest demo/manifest.csv --config demo/mmpipe.toml`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow; [brackets] are not eaten as markup
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: ./mmpipe.toml if present). `MMPIPE_*` variables "
                 "override it, e.g. `MMPIPE_IMAGE__SIZE=32`; flags override both.", show_default=False),
]
DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Data dir for shards, quarantine and dataset.json (default: ./mmpipe-data).",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a report.")]


def main() -> None:
    """Entry point: domain errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        app()
    except MmpipeError as error:
        typer.echo(f"mmpipe: error: {error}", err=True)
        sys.exit(EXIT_UNUSABLE_INPUT)


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(help="A manifest (.csv, .jsonl, .parquet) or a folder `LABEL/FILE`.",
                                           show_default=False)],
    data: DataOption = None,
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option(help="Parallel chunk workers (default: one per core).",
                                                show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Clean and standardize a raw source into Parquet shards, a quarantine and dataset.json.

    Every row read is accepted, quarantined with a reason, or counted as an exact duplicate.
    Re-running on an unchanged source reuses the previous result; only chunks with new or
    changed rows are cleaned again.
    Exit status: 0 done, 2 the source or config is unusable.
    """
    from mmpipe.config import load_config
    from mmpipe.sources import open_source

    settings = load_config(config, {"data_dir": data, "ingest.workers": workers})
    open_source(source)  # fail in a second, before starting Prefect, when the source is unusable
    _prepare_prefect()
    from flows.ingest import run_ingest

    with _progress_bar("Cleaning chunks", quiet=as_json):
        summary = _run_flow(lambda: run_ingest(source, settings))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_ingest_summary(summary)


@app.command()
def validate(
    data: DataOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the current dataset version against the Great Expectations suites in data_contracts/.

    Critical expectations gate training; warnings (drift from the reference version) are reported.
    Results and GX Data Docs go to `DATA/validation/DATASET_VERSION/`; an unchanged dataset and
    suite are not validated twice. Exit status: 0 all critical expectations pass, 1 one fails,
    2 no dataset or an unusable suite file.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.suites import read_suites
    from mmpipe.dataset import load_dataset

    settings = load_config(config, {"data_dir": data})
    load_dataset(settings.data_dir)  # fail fast (exit 2) before starting Prefect
    read_suites(settings)
    _prepare_prefect()
    from flows.validate import validate_flow

    try:
        summary = _run_flow(lambda: validate_flow(str(settings.data_dir), settings))
    except ContractViolation as violation:
        if as_json and violation.report is not None:
            typer.echo(json.dumps(violation.report.summary(), default=str))
        else:
            typer.echo(f"mmpipe: validation failed: {violation}", err=True)
        raise typer.Exit(EXIT_FAILED_CHECK) from None
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(f"dataset {summary['dataset_version']} passed every critical expectation "
               f"({len(summary['warnings'])} warning(s)); report: {summary['report']}")
    for warning in summary["warnings"]:
        typer.echo(f"  warning: {warning['expectation']} observed {warning['observed']}")


@app.command("train")
def train_command(
    data: DataOption = None,
    runs: Annotated[Path | None, typer.Option("--runs", help="Runs dir (default: ./mmpipe-runs).",
                                              show_default=False)] = None,
    variant: Annotated[str | None, typer.Option(help="fused (text + image), text or image (default: fused).",
                                                show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: 10).", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(help="Continue an interrupted run from its last finished epoch.",
                                               show_default=False)] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the fused Keras model on the current dataset version (it must pass `mmpipe validate`).

    Writes `RUNS/RUN_ID/`: run.json (config + hash, dataset version, seed, git commit, package
    versions, per-epoch history, status), model.keras, history.csv, TensorBoard logs and one
    checkpoint per epoch, so `--resume RUN_ID` continues an interrupted run. Exit status: 0 done,
    2 the dataset is missing or not validated, or the run cannot be resumed.
    """
    from mmpipe.config import load_config
    from mmpipe.dataset import load_dataset
    from mmpipe.train import require_validated, resumable_run

    settings = load_config(config, {"data_dir": data, "runs_dir": runs, "model.variant": variant,
                                    "train.epochs": epochs})
    version = load_dataset(settings.data_dir)
    require_validated(version)  # fail fast (exit 2) before starting Prefect
    if resume:
        resumable_run(Path(settings.runs_dir).absolute(), resume, version)
    _prepare_prefect()
    from flows.train import train_flow

    with _progress_bar("Training epochs", quiet=as_json):
        summary = _run_flow(lambda: train_flow(settings, resume))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    history = summary["history"]
    last = {key: values[-1] for key, values in history.items() if values}
    typer.echo(f"run {summary['run_id']} {summary['status']} after {len(history.get('loss', []))} epoch(s): "
               + ", ".join(f"{key} {value:.4f}" for key, value in sorted(last.items())))
    typer.echo(f"run dir: {summary['run_dir']}")


contracts_app = typer.Typer(help="Write the data contracts (Great Expectations suites) for your dataset.",
                            no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")


@contracts_app.command("init")
def contracts_init(
    data: DataOption = None,
    config: ConfigOption = None,
    out: Annotated[Path, typer.Option(help="Folder for shards.json and dataset.json.")] = Path("data_contracts"),
    force: Annotated[bool, typer.Option(help="Overwrite existing suite files.")] = False,
) -> None:
    """Profile the current dataset and write starting suites, like TFX SchemaGen.

    The class set and observed ranges (with a margin) are written as literal values for you to
    review; sizes and drift bounds stay parameters that mmpipe fills in from the config and the
    reference dataset. mmpipe uses ./data_contracts when it exists (or contracts.suites_dir).
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.profile import write_starting_suites

    settings = load_config(config, {"data_dir": data})
    for path in write_starting_suites(settings.data_dir, settings, out, force=force):
        typer.echo(f"wrote {path}")
    typer.echo("review them (severity: critical stops training, warning reports), then run `mmpipe validate`")


@app.command()
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
    typer.echo(f"wrote {manifest} ({rows} rows + faults) and {folder / 'mmpipe.toml'}")
    typer.echo(f"next: mmpipe ingest {manifest} --config {folder / 'mmpipe.toml'}")


def _prepare_prefect() -> None:
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _run_flow(call) -> Any:
    """Run a flow; a domain error raised inside it reaches the user as that error, not a traceback."""
    try:
        return call()
    except MmpipeError:
        raise
    except Exception as error:
        cause = error
        while cause is not None and not isinstance(cause, MmpipeError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


class _progress_bar:
    """A rich progress bar on stderr, driven by the flow's `mmpipe_progress` log records."""

    def __init__(self, description: str, quiet: bool):
        self.description, self.quiet = description, quiet

    def __enter__(self):
        if self.quiet or not sys.stderr.isatty():
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from flows.ingest import PROGRESS_EXTRA

        self.progress = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), transient=True)
        task_id = self.progress.add_task(self.description, total=None)

        class Handler(logging.Handler):
            def emit(inner, record: logging.LogRecord) -> None:
                done_total = getattr(record, PROGRESS_EXTRA, None)
                if done_total is not None:
                    self.progress.update(task_id, completed=done_total[0], total=done_total[1])

        self.handler = Handler()
        logging.getLogger("prefect.flow_runs").addHandler(self.handler)
        self.progress.start()
        return self

    def __exit__(self, *exc_info):
        if hasattr(self, "progress"):
            self.progress.stop()
            logging.getLogger("prefect.flow_runs").removeHandler(self.handler)


def _print_ingest_summary(summary: dict[str, Any]) -> None:
    quarantined = sum(summary["quarantined"].values())
    typer.echo(f"dataset {summary['dataset_version']} in {summary['data_dir']}")
    typer.echo(f"  rows read {summary['rows_read']}: accepted {summary['accepted']}, "
               f"quarantined {quarantined}, duplicates {summary['duplicates']}")
    for reason, count in sorted(summary["quarantined"].items(), key=lambda item: -item[1]):
        typer.echo(f"    {reason}: {count}")
    typer.echo("  splits: " + ", ".join(f"{split} {count}" for split, count in summary["splits"].items()))
    typer.echo(f"  classes: {', '.join(summary['classes'])}")
    typer.echo(f"details (reject examples, lineage): {Path(summary['data_dir']) / 'dataset.json'}")
