"""The stage commands: ingest, validate, train, evaluate, predict."""

from __future__ import annotations

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
    reading,
    run_flow,
    start_prefect,
    stores_on_disk,
)
from mmpipe.cli.output import (
    ProgressBar,
    print_contracts,
    print_ingest_summary,
    print_notice,
    print_tracking,
    warnings_of,
)
from mmpipe.errors import ContractViolation, MmpipeError
from mmpipe.wording import counted


def ingest(
    source: Annotated[str, typer.Argument(help="A manifest (.csv, .jsonl, .parquet) or a folder `LABEL/FILE`; a "
                                          "file or folder, or a bucket URL (s3://, gs://, az://).",
                                          show_default=False)],
    data: DataOption = None,
    config: ConfigOption = None,
    workers: Annotated[int | None, typer.Option(help="Parallel chunk workers (default: one per core).",
                                                show_default=False)] = None,
    dask: DaskOption = None,
    as_json: JsonOption = False,
) -> None:
    """Clean and standardize a raw source into Parquet shards, a quarantine and dataset.json.

    Every row read is accepted, quarantined with a reason, or counted as an exact duplicate.
    Re-running on an unchanged source reuses the previous result; only chunks with new or
    changed rows are cleaned again.
    Exit status: 0 done, 2 the source or config is unusable.
    """
    from mmpipe.config import load_config
    from mmpipe.ingest.sources import open_source

    settings = load_config(config, {"data_dir": data, "ingest.workers": workers, "ingest.dask_address": dask})
    open_source(source)  # fail in a second, before starting Prefect, when the source is unusable
    with stores_on_disk(settings) as (settings, shown):
        start_prefect()
        from flows.ingest import run_ingest

        with ProgressBar("Ingest", quiet=as_json):
            summary = shown(run_flow(lambda: run_ingest(source, settings)))
        if as_json:
            typer.echo(json.dumps(summary))
            return
        print_ingest_summary(summary)


def validate(
    data: DataOption = None,
    contracts: ContractsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the current dataset version against its data contracts (Great Expectations suites).

    Two layers: the project suites shipped with mmpipe (what holds for every dataset) and the
    source suites (this source's classes, ranges and drift). A data dir without source suites
    gets them inferred from its first version that passes the project suites, into
    `DATA/contracts/`; review them with `mmpipe contracts show`. Critical expectations gate
    training; warnings are reported. The report goes to `DATA/validation/DATASET_VERSION/`:
    `index.html` to read (self-contained, opens offline) and `result.json` for programs; an
    unchanged dataset and suite are not validated twice.
    Exit status: 0 all critical expectations pass, 1 one fails, 2 no dataset or an unusable suite file.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.suites import load_contracts
    from mmpipe.ingest.version import load_dataset

    settings = load_config(config, {"data_dir": data, "contracts.suites_dir": contracts})
    with stores_on_disk(settings) as (settings, shown):
        load_dataset(settings.data_dir)  # fail fast (exit 2) before starting Prefect
        load_contracts(settings.data_dir, settings)
        start_prefect()
        from flows.validate import validate_flow

        try:
            summary = shown(run_flow(lambda: validate_flow(str(settings.data_dir), settings)))
        except ContractViolation as violation:
            if as_json and violation.report is not None:
                typer.echo(json.dumps(shown(violation.report.summary()), default=str))
            else:
                typer.echo(f"mmpipe: validation failed: {shown(str(violation))}", err=True)
            raise typer.Exit(EXIT_FAILED_CHECK) from None
        if as_json:
            typer.echo(json.dumps(summary, default=str))
            print_notice(summary)
            return
        typer.echo(f"dataset {summary['dataset_version']} passed every critical expectation "
                   f"({warnings_of(summary)}); report: {summary['page']}")
        print_contracts(summary)
        for warning in summary["warnings"]:
            typer.echo(f"  warning: {warning['expectation']}: {warning['observed']}")


def train_command(
    data: DataOption = None,
    runs: RunsOption = None,
    variant: Annotated[str | None, typer.Option(help="fused (text + image), text or image (default: fused).",
                                                show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs at most (default: train.epochs, 20; early "
                                               "stopping may end sooner).", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(help="Continue an interrupted run from its last finished epoch.",
                                               show_default=False)] = None,
    local_workers: Annotated[int | None, typer.Option(
        min=2, help="Train as this many worker processes on this machine (train.strategy multi_worker, TF_CONFIG "
        "on loopback ports): multi-worker training tried out before a cluster.", show_default=False)] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the fused Keras model on the current dataset version (it must pass `mmpipe validate`).

    Writes `RUNS/RUN_ID/`: run.json (config + hash, dataset version, seed, git commit, package
    versions, per-epoch history, status, strategy and replicas), model.keras, history.csv,
    TensorBoard logs, one checkpoint per epoch (so `--resume RUN_ID` continues an interrupted run)
    and serving/, the SavedModel `mmpipe predict` uses.

    Training is spread by `[train] strategy`: one device, mirrored over the GPUs (or over
    `cpu_devices` logical CPUs), or multi_worker, each worker started with its TF_CONFIG (or all of
    them here with --local-workers). Exit status: 0 done, 2 the dataset is missing or not
    validated, the run cannot be resumed, or the strategy cannot start.
    """
    from mmpipe.config import load_config
    from mmpipe.ingest.version import load_dataset
    from mmpipe.train import require_validated, resumable_run

    settings = load_config(config, {"data_dir": data, "runs_dir": runs, "model.variant": variant,
                                    "train.epochs": epochs})
    with stores_on_disk(settings) as (settings, shown):
        version = load_dataset(settings.data_dir)
        require_validated(version)  # fail fast (exit 2) before starting Prefect
        if resume:
            resumable_run(Path(settings.runs_dir).absolute(), resume, version)
        if local_workers:
            # The workers work on this command's local copies; it publishes them when they are done.
            _train_as_local_workers(local_workers, settings.data_dir, settings.runs_dir, variant, epochs, resume,
                                    config, as_json)
            return
        start_prefect()
        from flows.train import train_flow

        with ProgressBar("Train", quiet=as_json):
            summary = shown(run_flow(lambda: train_flow(settings, resume)))
        if as_json:
            typer.echo(json.dumps(summary))
            return
        history = summary["history"]
        last = {key: values[-1] for key, values in history.items() if values}
        epochs_done = counted(len(history.get("loss", [])), "epoch")
        typer.echo(f"run {summary['run_id']} {summary['status']} after {epochs_done}: "
                   + ", ".join(f"{key} {value:.4f}" for key, value in sorted(last.items())))
        typer.echo(f"run dir: {summary['run_dir']}")
        print_tracking(summary)


def _train_as_local_workers(count: int, data, runs, variant, epochs, resume, config, as_json) -> None:
    """`mmpipe train` as `count` workers on this machine: the chief's output shown, the others' logged."""
    import shutil
    import tempfile

    from mmpipe.train.launch import launch_local_workers

    options = {"--data": data, "--runs": runs, "--variant": variant, "--epochs": epochs, "--resume": resume,
               "--config": config}
    arguments = ["train", *[str(part) for name, value in options.items() if value is not None
                            for part in (name, value)], *(["--json"] if as_json else [])]
    logs = Path(tempfile.mkdtemp(prefix="mmpipe-workers-"))
    done = launch_local_workers(count, arguments, logs=logs, capture=False)
    if done.returncode:
        typer.echo(f"mmpipe: a worker failed (exit {done.returncode}); the other workers' output is in {logs}",
                   err=True)
        raise typer.Exit(done.returncode)
    shutil.rmtree(logs, ignore_errors=True)


def predict(
    run_id: Annotated[str | None, typer.Argument(help="The run whose serving export to use (default: the champion, "
                                                 "see `mmpipe runs champion`).", show_default=False)] = None,
    text: Annotated[str | None, typer.Option(help="Raw text; cleaned in the model exactly as at ingest.",
                                             show_default=False)] = None,
    image: Annotated[Path | None, typer.Option(help="A JPEG, PNG, WebP, GIF or BMP file.", show_default=False)] = None,
    runs: RunsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Classify one raw (text, image) pair with a run's serving export (RUNS/RUN_ID/serving).

    The export is a TensorFlow SavedModel that cleans text and decodes, orients and resizes the
    image in-graph like ingest does, so what you pass here is what a production caller sends.
    A fused run needs both `--text` and `--image`; a text or image run needs only its own input.
    """
    from mmpipe.config import load_config
    from mmpipe.serving.predict import predict_files

    settings = load_config(config, {"runs_dir": runs})
    if run_id is None:
        from mmpipe.runs.store import CHAMPION_FILE, read_champion

        with reading(settings.runs_dir, lambda relative: relative == CHAMPION_FILE) as runs_dir:
            run_id = (read_champion(runs_dir) or {}).get("run_id")
        if run_id is None:
            raise MmpipeError(f"no champion in {settings.runs_dir} yet: give a RUN_ID, or `mmpipe evaluate RUN_ID` to "
                              "pick one")
    with reading(settings.runs_dir, lambda relative: relative.startswith(f"{run_id}/")) as runs_dir:
        result = predict_files(runs_dir / run_id, text, image)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{result['label']}  (run {run_id}, {result['variant']} model)")
    for name, probability in sorted(result["probabilities"].items(), key=lambda item: -item[1]):
        typer.echo(f"  {name:<20} {probability:.4f}")


def evaluate(
    run_id: Annotated[str, typer.Argument(help="The run to score (`mmpipe runs list`).", show_default=False)],
    split: Annotated[str, typer.Option(help="Held-out split to score: test or val.")] = "test",
    data: Annotated[Path | None, typer.Option("--data", help="Score on the dataset in this data dir instead of the "
                                              "one the run trained on (e.g. a newly arrived batch).",
                                              show_default=False)] = None,
    runs: RunsOption = None,
    promote_run: Annotated[bool, typer.Option("--promote/--no-promote", help="After scoring the run's own test "
                                              "split, decide champion/challenger.")] = True,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a finished run on a held-out split and write its report.

    The run's own test split goes to RUNS/RUN_ID/ (metrics.json, predictions.parquet,
    confusion_matrix.png, report.html); other splits or `--data` go to
    RUNS/RUN_ID/evaluations/VERSION-SPLIT/. Then, unless `--no-promote`, the run is compared with
    the champion on the same test set and promoted if its macro F1 is better by
    `evaluate.promote_margin` and no class's F1 drops by more than `evaluate.max_class_f1_drop`.
    """
    from mmpipe.config import load_config
    from mmpipe.runs.store import load_run

    settings = load_config(config, {"runs_dir": runs})
    with stores_on_disk(settings) as (settings, shown):
        load_run(Path(settings.runs_dir).absolute(), run_id)  # fail fast (exit 2) before starting Prefect
        start_prefect()
        from flows.evaluate import evaluate_flow

        with ProgressBar("Evaluate", quiet=as_json):
            summary = shown(run_flow(lambda: evaluate_flow(run_id, settings, split,
                                                            data.absolute() if data else None, promote_run)))
        if as_json:
            typer.echo(json.dumps(summary))
            return
        metrics = summary["metrics"]
        rows = counted(summary["n"], "row")
        typer.echo(f"run {run_id} on {summary['split']} of {summary['dataset_version']} ({rows}): "
                   f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
                   f"log loss {metrics['log_loss']:.4f}, ECE {metrics['ece']:.4f}")
        if "promotion" in summary:
            decision = summary["promotion"]
            typer.echo(("promoted to champion: " if decision["promoted"] else "not promoted: ")
                       + "; ".join(decision["reasons"]))
        typer.echo(f"report: {summary['report']}")
