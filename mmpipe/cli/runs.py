"""`mmpipe runs`: list, show, compare, champion."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mmpipe.cli.common import ConfigOption, JsonOption, PlainFlagsGroup, RunsOption, reading
from mmpipe.cli.output import setting_value
from mmpipe.wording import counted

runs_app = typer.Typer(help="Look at training runs: list, show, compare, champion.", no_args_is_help=True,
                       cls=PlainFlagsGroup)


@contextlib.contextmanager
def runs_dir_of(runs: str | None, config: Path | None) -> Iterator[tuple[Path, str | None]]:
    """(the run store's folder to read, its URL when it is a bucket's: the folder is then a temporary copy of
    its run records, the JSON files only)."""
    from mmpipe.config import load_config
    from mmpipe.storage.urls import is_url

    location = load_config(config, {"runs_dir": runs}).runs_dir
    with reading(location, lambda relative: relative.endswith(".json")) as folder:
        yield folder, str(location) if is_url(location) else None


def none_yet(what: str, folder: Path, how: str, url: str | None = None) -> str:
    """`no runs in DIR yet`, naming the folder looked in: run from elsewhere, `./mmpipe-runs` is not there."""
    if url is not None:
        return f"no {what} in {url} yet: {how} (or pass --runs URL)"
    if not folder.is_dir():
        return f"no {what}: {folder} does not exist ({how} there, or pass --runs DIR to look elsewhere)"
    return f"no {what} in {folder} yet: {how} (or pass --runs DIR)"


def validation_line(validation: dict) -> str:
    """`passed (PAGE)`: the verdict the run trained on and where to read it (the page, else result.json)."""
    from mmpipe.contracts.page import PAGE_FILE

    if validation.get("success") is None:
        return "not recorded"
    verdict = "passed" if validation["success"] else "FAILED"
    result = validation.get("result")
    if not result:
        return verdict
    page = Path(result).with_name(PAGE_FILE)
    return f"{verdict} ({page if page.is_file() else result})"


@runs_app.command("list")
def runs_list(
    dataset: Annotated[str | None, typer.Option(help="Only runs trained on this dataset version.",
                                                show_default=False)] = None,
    runs: RunsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """One line per run, newest first: id, start, status, variant, dataset, accuracy, macro F1, champion (*).

    A tuning study's trial runs are listed together under it, by trial (`#N`); a pruned trial's run is
    `pruned`. Accuracy and macro F1 are on the test split: a study's best run alone is evaluated there."""
    from mmpipe.errors import RunStoreError
    from mmpipe.runs.store import list_runs, read_champion

    with runs_dir_of(runs, config) as (folder, url):
        rows = list_runs(folder, dataset)
        if as_json:
            typer.echo(json.dumps(rows))
            return
        if not rows:
            typer.echo(none_yet("runs", folder, "`mmpipe train` makes one", url))
            return
        groups = grouped_by_study(rows)
        names = {row["run_id"]: row["run_id"] if study is None else f"  {row['run_id']} #{row['trial']}"
                 for study, group in groups for row in group}
        width = max(24, *map(len, names.values()))
        typer.echo(f"  {'run':<{width}} {'started':<21} {'status':<11} {'variant':<8} {'dataset':<17} {'accuracy':>8} "
                   f"{'macro F1':>8}")
        for study, group in groups:
            if study is not None:
                typer.echo(f"  study {study}: {counted(len(group), 'trial run')} (`mmpipe tune` again resumes it)")
            for row in group:
                scores = [f"{row[key]:.4f}" if row[key] is not None else "-" for key in ("accuracy", "macro_f1")]
                typer.echo(f"{'*' if row['champion'] else ' '} {names[row['run_id']]:<{width}} "
                           f"{row['started_at'] or '-':<21} {row['status']:<11} {row['variant'] or '-':<8} "
                           f"{row['dataset_version'] or '-':<17} {scores[0]:>8} {scores[1]:>8}")
        for row in rows:
            if row["problem"]:
                typer.echo(f"mmpipe: {row['run_id']}: {row['problem']}", err=True)
        try:
            read_champion(folder)
        except RunStoreError as error:
            typer.echo(f"mmpipe: {error}", err=True)


def grouped_by_study(rows: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """Runs in list order, a tuning study's trial runs together (by trial) where its newest run is."""
    groups: list[tuple[str | None, list[dict]]] = []
    studies: dict[str, list[dict]] = {}
    for row in rows:
        study = row.get("study")
        if study is None:
            groups.append((None, [row]))
        elif study in studies:
            studies[study].append(row)
        else:
            studies[study] = [row]
            groups.append((study, studies[study]))
    for group in studies.values():
        group.sort(key=lambda row: row["trial"] if row["trial"] is not None else -1)
    return groups


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id.", show_default=False)],
    runs: RunsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """A run's record: config, dataset lineage (shards and their hashes, validation), metrics, promotion."""
    from mmpipe.runs.store import show_run

    with runs_dir_of(runs, config) as (folder, _):
        shown = show_run(folder, run_id)
    if as_json:
        typer.echo(json.dumps(shown))
        return
    lineage = shown.get("lineage", {})
    typer.echo(f"run {run_id}: {shown['status']}, {shown['variant']} model{', champion' if shown['champion'] else ''}")
    typer.echo(f"  dataset {shown['dataset_version']} ({counted(len(lineage.get('shards', [])), 'shard')}), "
               f"validation: {validation_line(lineage.get('validation') or {})}")
    git = shown.get("git_commit") or "not a git checkout"
    typer.echo(f"  config hash {shown['config_hash']}, seed {shown['seed']}, git: {git}")
    if shown.get("distribution"):
        typer.echo(f"  trained: {distribution_line(shown['distribution'])}")
    if shown.get("study"):
        study = shown["study"]
        typer.echo(f"  trial {study['trial']} of study {study['name']}: "
                   + ", ".join(f"{name} = {setting_value(value)}" for name, value in study["params"].items()))
    if shown.get("error"):
        typer.echo(f"  {shown['error']}" if shown["status"] == "pruned" else f"  error: {shown['error']}")
    evaluation = shown["evaluation"]
    if evaluation:
        for line in metric_lines(evaluation["metrics"]):
            typer.echo(f"  {line}")
        typer.echo(f"  report: {evaluation['report']}")
    if shown["promotion"]:
        typer.echo(f"  promotion: {'promoted' if shown['promotion']['promoted'] else 'not promoted'}: "
                   + "; ".join(shown["promotion"]["reasons"]))
    typer.echo(f"  run dir: {shown['run_dir']}")


def distribution_line(shape: dict) -> str:
    """"mirrored, 2 replicas on 1 worker, batch 16 per replica (32 global)"."""
    return (f"{shape['strategy']}, {counted(shape['replicas'], 'replica')} on {counted(shape['workers'], 'worker')}, "
            f"batch {shape['per_replica_batch']} per replica ({shape['global_batch']} global)")


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

    with runs_dir_of(runs, config) as (folder, _):
        diff = compare_runs(folder, run_a, run_b)
    if as_json:
        typer.echo(json.dumps(diff))
        return
    dataset = diff["dataset"]
    typer.echo(f"{run_a} -> {run_b} (each change is B - A)")
    if not dataset["same"]:
        typer.echo(f"  each run was scored on its own dataset's test split ({dataset['a']} -> {dataset['b']}): the "
                   "metric changes mix the model's with the data's")
    for key, change in diff["metrics"].items():
        if change["delta"] is not None:
            typer.echo(f"  {key:<26} {change['a']:.4f} -> {change['b']:.4f} ({change['delta']:+.4f})")
    for name, change in diff["per_class_f1"].items():
        if change["delta"] is not None:
            typer.echo(f"  F1 {name:<23} {change['a']:.4f} -> {change['b']:.4f} ({change['delta']:+.4f})")
    for key, change in diff["config"].items():
        typer.echo(f"  config {key}: {change['a']!r} -> {change['b']!r}")
    typer.echo(f"  dataset: {'same' if dataset['same'] else dataset['a'] + ' -> ' + dataset['b']}")


@runs_app.command("champion")
def runs_champion(runs: RunsOption = None, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The current champion (the run `mmpipe predict` uses by default)."""
    from mmpipe.runs.store import read_champion

    with runs_dir_of(runs, config) as (folder, url):
        champion = read_champion(folder)
        if as_json:
            typer.echo(json.dumps(champion))
            return
        if champion is None:
            typer.echo(none_yet("champion", folder, "`mmpipe evaluate RUN_ID` promotes the first evaluated run",
                                url))
            return
        typer.echo(f"{champion['run_id']} (macro F1 {champion['macro_f1']:.4f} on {champion['dataset_version']}, "
                   f"promoted {champion['promoted_at']}, "
                   + (f"previous {champion['previous']})" if champion.get("previous") else "the first champion)"))


def metric_lines(metrics: dict) -> list[str]:
    """Quality, calibration and speed, each a line, in the order and words of the report."""
    from mmpipe.evaluate.metrics import CALIBRATION, QUALITY, named

    lines = [f"{group}: " + ", ".join(f"{label} {metrics[key]:.4f}" for key, label in named(metrics, names))
             for group, names in (("quality", QUALITY), ("calibration (lower is better)", CALIBRATION))
             if named(metrics, names)]
    if "throughput_samples_per_s" in metrics:
        latency = metrics.get("latency_ms") or {}
        lines.append(f"speed: {metrics['throughput_samples_per_s']:,.1f} rows/s"
                     + "".join(f", one-row latency {name} {value:.2f} ms" for name, value in latency.items()))
    return lines
