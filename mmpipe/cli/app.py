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
    help="Raw text + image data in: clean versioned Parquet shards, data contracts, a trained and evaluated "
    "Keras classifier with a serving export out, orchestrated by Prefect.\n\n"
    "Start with `mmpipe demo`: a sample dataset through the whole pipeline, in a few minutes.",
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
RunsOption = Annotated[
    Path | None, typer.Option("--runs", help="Runs dir (default: ./mmpipe-runs).", show_default=False)
]
DaskOption = Annotated[
    str | None,
    typer.Option("--dask", help="Clean chunks on an existing Dask cluster, e.g. `tcp://scheduler:8786` "
                 "(needs `pip install mmpipe[dask]`; default: local threads).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a report.")]
ContractsOption = Annotated[
    Path | None,
    typer.Option("--contracts", help="Folder of exported source suites (shards.json, dataset.json) to validate with, "
                 "instead of the ones inferred into `DATA/contracts/` (sets `contracts.suites_dir`).",
                 show_default=False),
]


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
    contracts: ContractsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the current dataset version against its data contracts (Great Expectations suites).

    Two layers: the project suites shipped with mmpipe (what holds for every dataset) and the
    source suites (this source's classes, ranges and drift). A data dir without source suites
    gets them inferred from its first version that passes the project suites, into
    `DATA/contracts/`; review them with `mmpipe contracts show`. Critical expectations gate
    training; warnings are reported. Results and GX Data Docs go to
    `DATA/validation/DATASET_VERSION/`; an unchanged dataset and suite are not validated twice.
    Exit status: 0 all critical expectations pass, 1 one fails, 2 no dataset or an unusable suite file.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.suites import load_contracts
    from mmpipe.ingest.version import load_dataset

    settings = load_config(config, {"data_dir": data, "contracts.suites_dir": contracts})
    load_dataset(settings.data_dir)  # fail fast (exit 2) before starting Prefect
    load_contracts(settings.data_dir, settings)
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
        _print_notice(summary)
        return
    typer.echo(f"dataset {summary['dataset_version']} passed every critical expectation "
               f"({len(summary['warnings'])} warning(s)); report: {summary['report']}")
    _print_contracts(summary)
    for warning in summary["warnings"]:
        typer.echo(f"  warning: {warning['expectation']}: {warning['observed']}")


def _print_contracts(validation: dict) -> None:
    """Which suites were used; when they were just inferred, the loud notice on stderr too."""
    from mmpipe.contracts.infer import source_origin_line

    typer.echo(f"  {source_origin_line(validation['contracts'])}")
    _print_notice(validation)


def _print_notice(validation: dict) -> None:
    if validation.get("notice"):
        typer.secho(f"mmpipe: {validation['notice']}", err=True, bold=True)


@app.command("train")
def train_command(
    data: DataOption = None,
    runs: RunsOption = None,
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
    versions, per-epoch history, status), model.keras, history.csv, TensorBoard logs, one
    checkpoint per epoch (so `--resume RUN_ID` continues an interrupted run) and serving/, the
    SavedModel `mmpipe predict` uses. Exit status: 0 done,
    2 the dataset is missing or not validated, or the run cannot be resumed.
    """
    from mmpipe.config import load_config
    from mmpipe.ingest.version import load_dataset
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


@app.command()
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
    from mmpipe.serving.export import predict_files

    settings = load_config(config, {"runs_dir": runs})
    runs_dir = Path(settings.runs_dir).absolute()
    if run_id is None:
        from mmpipe.runs.store import read_champion

        run_id = (read_champion(runs_dir) or {}).get("run_id")
        if run_id is None:
            raise MmpipeError(f"no champion in {runs_dir} yet: give a RUN_ID, or `mmpipe evaluate RUN_ID` to pick one")
    result = predict_files(runs_dir / run_id, text, image)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{result['label']}  (run {run_id}, {result['variant']} model)")
    for name, probability in sorted(result["probabilities"].items(), key=lambda item: -item[1]):
        typer.echo(f"  {name:<20} {probability:.4f}")


@app.command("run")
def run_command(
    source: Annotated[Path, typer.Argument(help="A manifest (.csv, .jsonl, .parquet) or a folder `LABEL/FILE`.",
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
    """
    from mmpipe.config import load_config
    from mmpipe.ingest.sources import open_source

    settings = load_config(config, {"data_dir": data, "runs_dir": runs, "ingest.dask_address": dask,
                                    "contracts.suites_dir": contracts})
    open_source(source)
    summary = _run_pipeline(source, settings, quiet=as_json)
    if as_json:
        typer.echo(json.dumps(summary))
        _print_notice(summary["validation"])
        return
    _print_pipeline_summary(summary)


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="Folder for the sample, its data dir and runs dir.")] = Path(
        "mmpipe-demo"),
    rows: Annotated[int, typer.Option(min=40, help="Rows in the generated sample.")] = 400,
) -> None:
    """Generate the sample dataset and run the whole pipeline on it; prints where the report is.

    Writes FOLDER/sample (raw files), FOLDER/data (shards), FOLDER/runs (the run, its report
    and serving export). A few minutes on a 2-core laptop, CPU only.
    """
    from mmpipe.config import load_config
    from mmpipe.sample import SampleSpec, write_sample

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise MmpipeError(f"{folder} exists and is not an empty folder; choose a new folder for the demo")
    manifest = write_sample(folder / "sample", SampleSpec(rows=rows, seed=0))
    typer.echo(f"wrote the sample: {manifest}")
    settings = load_config(folder / "sample" / "mmpipe.toml",
                           {"data_dir": folder / "data", "runs_dir": folder / "runs"})
    summary = _run_pipeline(manifest, settings, quiet=False)
    _print_pipeline_summary(summary)
    image = min((folder / "sample" / "images").iterdir())
    typer.echo(f"next: mmpipe runs list --runs {folder / 'runs'}")
    typer.echo(f"      mmpipe predict --runs {folder / 'runs'} --text 'a lantern at night' --image {image}")


def _run_pipeline(source: Path, settings, quiet: bool) -> dict:
    _prepare_prefect()
    from flows.pipeline import pipeline_flow

    try:
        with _progress_bar("Pipeline", quiet=quiet):
            return _run_flow(lambda: pipeline_flow(str(source.absolute()), settings))
    except ContractViolation as violation:
        typer.echo(f"mmpipe: the dataset failed its data contracts; nothing was trained: {violation}", err=True)
        raise typer.Exit(EXIT_FAILED_CHECK) from None


def _print_pipeline_summary(summary: dict) -> None:
    metrics, promotion = summary["metrics"], summary["promotion"] or {}
    ingest = summary["ingest"]
    typer.echo(f"dataset {summary['dataset_version']}: {ingest['accepted']} accepted, "
               f"{sum(ingest['quarantined'].values())} quarantined, {ingest['duplicates']} duplicates; "
               f"contracts passed ({len(summary['validation']['warnings'])} warning(s))")
    _print_contracts(summary["validation"])
    typer.echo(f"run {summary['run_id']}: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} "
               f"(test split); {'promoted to champion' if promotion.get('promoted') else 'not promoted'}")
    typer.echo(f"report: {summary['report']}")


@app.command()
def serve(
    data: DataOption = None,
    runs: RunsOption = None,
    config: ConfigOption = None,
) -> None:
    """Register and serve the deployments `retrain`, `watch` and `on-new-data` until stopped (Ctrl-C).

    `retrain` runs the pipeline on each `[serve] sources` entry on `serve.retrain_cron` (default
    nightly, `serve.timezone`); `watch` looks at the sources every `serve.watch_interval_s` and
    emits `mmpipe.source.changed` when new files have settled; `on-new-data` runs the pipeline on
    that event, one run at a time. Needs a Prefect server: `prefect server start`, then
    `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
    """
    from prefect.settings import get_current_settings

    from mmpipe.config import load_config

    settings = load_config(config, {"data_dir": data, "runs_dir": runs})
    if not get_current_settings().api.url:
        raise MmpipeError("mmpipe serve needs a Prefect server (schedules and triggers do not fire on a temporary "
                          "one): run `prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`")
    from deployments.serve import serve_forever

    serve_forever(settings)


@app.command()
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
    load_run(Path(settings.runs_dir).absolute(), run_id)  # fail fast (exit 2) before starting Prefect
    _prepare_prefect()
    from flows.evaluate import evaluate_flow

    summary = _run_flow(lambda: evaluate_flow(run_id, settings, split, data.absolute() if data else None,
                                              promote_run))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    metrics = summary["metrics"]
    typer.echo(f"run {run_id} on {summary['split']} of {summary['dataset_version']} ({summary['n']} rows): "
               f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
               f"log loss {metrics['log_loss']:.4f}, ECE {metrics['ece']:.4f}")
    if "promotion" in summary:
        decision = summary["promotion"]
        typer.echo(("promoted to champion: " if decision["promoted"] else "not promoted: ")
                   + "; ".join(decision["reasons"]))
    typer.echo(f"report: {Path(summary['out_dir']) / 'report.html'}")


runs_app = typer.Typer(help="Look at training runs: list, show, compare, champion.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


def _runs_dir(runs: Path | None, config: Path | None) -> Path:
    from mmpipe.config import load_config

    return Path(load_config(config, {"runs_dir": runs}).runs_dir).absolute()


@runs_app.command("list")
def runs_list(
    dataset: Annotated[str | None, typer.Option(help="Only runs trained on this dataset version.",
                                                show_default=False)] = None,
    runs: RunsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One line per run, newest first: id, start, status, variant, dataset, accuracy, macro F1, champion (*)."""
    from mmpipe.runs.store import list_runs

    rows = list_runs(_runs_dir(runs, config), dataset)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no runs yet: `mmpipe train` makes one")
        return
    typer.echo(f"  {'run':<24} {'started':<21} {'status':<10} {'variant':<8} {'dataset':<17} {'accuracy':>8} "
               f"{'macro F1':>8}")
    for row in rows:
        scores = [f"{row[key]:.4f}" if row[key] is not None else "-" for key in ("accuracy", "macro_f1")]
        typer.echo(f"{'*' if row['champion'] else ' '} {row['run_id']:<24} {row['started_at']:<21} "
                   f"{row['status']:<10} {row['variant']:<8} {row['dataset_version']:<17} {scores[0]:>8} "
                   f"{scores[1]:>8}")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id.", show_default=False)],
    runs: RunsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A run's record: config, dataset lineage (shards and their hashes, validation), metrics, promotion."""
    from mmpipe.runs.store import show_run

    shown = show_run(_runs_dir(runs, config), run_id)
    if as_json:
        typer.echo(json.dumps(shown))
        return
    lineage = shown.get("lineage", {})
    typer.echo(f"run {run_id}: {shown['status']}, {shown['variant']} model{', champion' if shown['champion'] else ''}")
    typer.echo(f"  dataset {shown['dataset_version']} ({len(lineage.get('shards', []))} shards), validation passed: "
               f"{lineage.get('validation', {}).get('success')}")
    typer.echo(f"  config hash {shown['config_hash']}, seed {shown['seed']}, git {shown.get('git_commit')}")
    if shown.get("error"):
        typer.echo(f"  error: {shown['error']}")
    evaluation = shown["evaluation"]
    if evaluation:
        typer.echo("  " + ", ".join(f"{key} {value:.4f}" for key, value in evaluation["metrics"].items()
                                    if isinstance(value, float)))
        typer.echo(f"  report: {Path(evaluation['out_dir']) / 'report.html'}")
    if shown["promotion"]:
        typer.echo(f"  promotion: {'promoted' if shown['promotion']['promoted'] else 'not promoted'}: "
                   + "; ".join(shown["promotion"]["reasons"]))
    typer.echo(f"  run dir: {shown['run_dir']}")


@runs_app.command("compare")
def runs_compare(
    run_a: Annotated[str, typer.Argument(help="The baseline run.", show_default=False)],
    run_b: Annotated[str, typer.Argument(help="The run compared with it.", show_default=False)],
    runs: RunsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """B minus A: metric deltas, per-class F1 deltas, config differences, dataset differences."""
    from mmpipe.runs.store import compare_runs

    diff = compare_runs(_runs_dir(runs, config), run_a, run_b)
    if as_json:
        typer.echo(json.dumps(diff))
        return
    typer.echo(f"{run_b} vs {run_a} (B - A)")
    for key, change in diff["metrics"].items():
        if change["delta"] is not None:
            typer.echo(f"  {key:<26} {change['a']:.4f} -> {change['b']:.4f} ({change['delta']:+.4f})")
    for name, change in diff["per_class_f1"].items():
        if change["delta"] is not None:
            typer.echo(f"  F1 {name:<23} {change['a']:.4f} -> {change['b']:.4f} ({change['delta']:+.4f})")
    for key, change in diff["config"].items():
        typer.echo(f"  config {key}: {change['a']!r} -> {change['b']!r}")
    dataset = diff["dataset"]
    typer.echo(f"  dataset: {'same' if dataset['same'] else dataset['a'] + ' -> ' + dataset['b']}")


@runs_app.command("champion")
def runs_champion(runs: RunsOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The current champion (the run `mmpipe predict` uses by default)."""
    from mmpipe.runs.store import read_champion

    champion = read_champion(_runs_dir(runs, config))
    if as_json:
        typer.echo(json.dumps(champion))
        return
    if champion is None:
        typer.echo("no champion yet: `mmpipe evaluate RUN_ID` promotes the first evaluated run")
        return
    typer.echo(f"{champion['run_id']} (macro F1 {champion['macro_f1']:.4f} on {champion['dataset_version']}, "
               f"promoted {champion['promoted_at']}, previous {champion['previous']})")


contracts_app = typer.Typer(help="The data contracts of a data dir: show, export, infer, accept new classes.",
                            no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")


@contracts_app.command("show")
def contracts_show(
    data: DataOption = None,
    contracts: ContractsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which suites apply to the data dir, where they come from, and what the source suites expect.

    Project suites ship with mmpipe and hold for every dataset; source suites are this source's
    (inferred into `DATA/contracts/` from its first good version, or exported ones given by
    `--contracts DIR`).
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import source_origin_line
    from mmpipe.contracts.suites import describe_expectation, load_contracts

    settings = load_config(config, {"data_dir": data, "contracts.suites_dir": contracts})
    loaded = load_contracts(settings.data_dir, settings)
    described = loaded.describe()
    layers = {"project": loaded.project, "source": loaded.source or {}}
    if as_json:
        for name, suites in layers.items():
            described[name]["expectations"] = {kind: suite.expectations for kind, suite in suites.items()}
        typer.echo(json.dumps(described, default=str))
        return
    typer.echo(f"project contracts: built-in, {described['project']['dir']}")
    typer.echo(source_origin_line(described))
    for name, suites in layers.items():
        for kind, suite in suites.items():
            typer.echo(f"\n{name}/{kind} ({suite.path}):")
            for entry in suite.expectations:
                kwargs = {key: value for key, value in entry.get("kwargs", {}).items() if key != "column"}
                shown = ", ".join(f"{key}={_brief(value)}" for key, value in kwargs.items())
                typer.echo(f"  {entry['severity']:<8} {describe_expectation(entry)}" + (f": {shown}" if shown else ""))
    typer.echo("\n<name> values are filled in at validation from the dataset's settings and the drift reference")
    if loaded.source is None:
        typer.echo("next: `mmpipe validate` infers the source contracts from the current version")
    elif described["source"]["origin"] == "inferred":
        typer.echo("keep them under version control: `mmpipe contracts export DIR`, then `--contracts DIR` "
                   "(or contracts.suites_dir)")


def _brief(value: Any, limit: int = 400) -> str:
    """A suite argument as a reviewer reads it: parameters as <name> (filled in from the settings)."""
    if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
        return f"<{value['$PARAMETER']}>"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contracts_app.command("export")
def contracts_export(
    out: Annotated[Path, typer.Argument(help="Folder to write shards.json and dataset.json into.",
                                        show_default=False)],
    data: DataOption = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing suite files.")] = False,
    config: ConfigOption = None,
) -> None:
    """Copy the data dir's source suites to a folder, to review and keep under version control.

    Then use them with `--contracts DIR` (or `contracts.suites_dir = "DIR"` in mmpipe.toml, or a
    `[serve] sources` entry's `contracts`): exported suites win over the inferred ones.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import export_source_suites

    settings = load_config(config, {"data_dir": data})
    for path in export_source_suites(settings.data_dir, settings, out, force=force):
        typer.echo(f"wrote {path}")
    typer.echo(f"use them with `--contracts {out}` or `contracts.suites_dir = \"{out}\"` in mmpipe.toml")


@contracts_app.command("init")
def contracts_init(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option(help="Folder for shards.json and dataset.json (default: the data "
                                             "dir's `contracts/`, where validation finds them).",
                                             show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace existing suite files (re-infer).")] = False,
    config: ConfigOption = None,
) -> None:
    """Infer source suites from the current dataset version, like TFX SchemaGen (the explicit form).

    `mmpipe validate` does this by itself on a data dir's first good version; use this to
    re-infer (`--force`) after the data has changed on purpose, or to write them elsewhere.
    The class set is critical; observed ranges (with a margin), formats, class coverage and
    drift are warnings; sizes and drift bounds stay parameters filled in from the config.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import init_source_suites

    settings = load_config(config, {"data_dir": data})
    for path in init_source_suites(settings.data_dir, settings, out, force=force):
        typer.echo(f"wrote {path}")
    typer.echo("review them (severity: critical stops training, warning reports), then run `mmpipe validate`")


@contracts_app.command("accept-classes")
def contracts_accept_classes(
    data: DataOption = None,
    contracts: ContractsOption = None,
    config: ConfigOption = None,
) -> None:
    """Accept the classes of the current dataset version that the source contracts do not know.

    A later version with a new class fails validation on purpose (a new class changes the model's
    output); this records the decision in the source suites (the data dir's, or the exported
    ones given by `--contracts`). Then run `mmpipe validate` (or the pipeline) again.
    """
    from mmpipe.config import load_config
    from mmpipe.contracts.infer import accept_classes

    settings = load_config(config, {"data_dir": data, "contracts.suites_dir": contracts})
    added, path = accept_classes(settings.data_dir, settings)
    if not added:
        typer.echo(f"nothing to accept: {path} already knows every class of the current version")
        return
    typer.echo(f"accepted {', '.join(f'{name!r} ({rows} rows)' for name, rows in added.items())} into {path}")
    typer.echo("next: `mmpipe validate` (or `mmpipe run`)")


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
