"""`mmpipe score`: new data through a run (default: the champion), with drift against what it learned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmpipe.cli.common import (
    ConfigOption,
    DaskOption,
    DataOption,
    JsonOption,
    RunsOption,
    run_flow,
    start_prefect,
    stores_on_disk,
)
from mmpipe.cli.output import ProgressBar
from mmpipe.wording import counted


def score(
    source: Annotated[str, typer.Argument(help="The data to score: a manifest (.csv, .jsonl, .parquet; the label "
                                          "column optional) or a folder (LABEL/FILE, or images at its top), or a "
                                          "bucket URL.", show_default=False)],
    run_id: Annotated[str | None, typer.Argument(help="The run that scores (`mmpipe runs list`); default: the "
                                                 "champion.", show_default=False)] = None,
    runs: RunsOption = None,
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Where scorings go (default: score.out_dir, else a "
                                             "`scores` folder beside the data dir).", show_default=False)] = None,
    config: ConfigOption = None,
    dask: DaskOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score new data with a run and tell whether it drifted from what the run learned.

    Rows are cleaned by ingest's own code with the run's settings: a broken image, a path outside
    the source or an unreadable text is quarantined with its reason, never scored. Writes
    OUT/VERSION/: predictions.parquet (id, predicted, confidence, probability_CLASS, label, run_id
    and the source's other columns), quarantine.parquet, report.html and scoring.json (counts,
    drift, lineage, timings). Drift is judged per feature (text length, brightness, colourfulness,
    image size, out-of-vocabulary rate, image format, predicted class) against the run's train
    split; drift emits the Prefect event `mmpipe.drift.detected`. With labels, the metrics too.
    A scoring killed halfway redoes only the chunks it had not finished.
    Exit status: 0 scored (drift or not), 2 the source, run or settings are unusable.
    """
    from mmpipe.config import load_config
    from mmpipe.ingest.sources import open_source

    settings = load_config(config, {"runs_dir": runs, "data_dir": data, "score.out_dir": out,
                                    "ingest.dask_address": dask})
    open_source(source, labelled=False)  # fail in a second, before starting Prefect, when the source is unusable
    with stores_on_disk(settings) as (settings, shown):
        _check_run(Path(settings.runs_dir).absolute(), run_id)
        start_prefect()
        from flows.score import run_score

        with ProgressBar("Score", quiet=as_json):
            summary = shown(run_flow(lambda: run_score(source, settings, run_id)))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    quarantined = sum(summary["quarantined"].values())
    typer.echo(f"scored {summary['scored']} of {counted(summary['rows_read'], 'row')} with run {summary['run_id']}; "
               f"{quarantined} quarantined" + "".join(f", {reason} {count}"
                                                        for reason, count in summary["quarantined"].items()))
    metrics = summary["metrics"]
    if metrics:
        typer.echo(f"  on {counted(metrics['rows'], 'labelled row')}: accuracy {metrics['accuracy']:.4f}, "
                   f"macro F1 {metrics['macro_f1']:.4f}")
    if summary["unknown_labels"]:
        typer.echo(f"  {counted(summary['unknown_labels'], 'row')} labelled with a class the run was not trained "
                   "on: scored, not in the metrics")
    drift = summary["drift"]
    typer.echo(f"drift: {'DETECTED' if drift['detected'] else 'none'} ({drift['note']})")
    for name, found in drift["features"].items():
        if found["drifted"]:
            typer.echo(f"  {name}: {found['statistic']} >= {found['threshold']}")
    typer.echo(f"predictions: {summary['predictions'][0]}")
    typer.echo(f"report: {summary['report']}")


def _check_run(runs_dir: Path, run_id: str | None) -> None:
    """Fail fast (exit 2) before starting Prefect: the run exists, or there is a champion to score with."""
    from mmpipe.errors import ScoringError
    from mmpipe.runs.store import load_run, read_champion

    if run_id is not None:
        load_run(runs_dir, run_id)
    elif read_champion(runs_dir) is None:
        raise ScoringError(f"no champion in {runs_dir} to score with: pass a RUN_ID (`mmpipe runs list`), or "
                           "evaluate a run first (`mmpipe evaluate RUN_ID`)")
