"""`mmpipe tune`: a hyperparameter search on a dataset (an Optuna study), its best run evaluated and judged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mmpipe.cli.common import ConfigOption, DataOption, JsonOption, RunsOption, run_flow, start_prefect, stores_on_disk
from mmpipe.cli.output import ProgressBar, setting_value
from mmpipe.wording import counted


def tune(
    data: DataOption = None,
    runs: RunsOption = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials the study holds when the search ends (default: "
                                               "tune.trials, 20); a study that has them already ends at once.",
                                               show_default=False)] = None,
    timeout: Annotated[float | None, typer.Option(min=1, help="Start no trial after this many seconds.",
                                                  show_default=False)] = None,
    space: Annotated[Path | None, typer.Option(help="A TOML file of the space: [model] and [train] tables of "
                                               "settings, each a range { low = 1e-4, high = 1e-2, log = true } or "
                                               "a list of choices (default: [tune.space] of the config).",
                                               show_default=False)] = None,
    parallel: Annotated[int | None, typer.Option(min=1, help="Trials at a time, each in its own process (default: "
                                                 "tune.parallel, 1).", show_default=False)] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search model and training settings on the current dataset version: an Optuna study, each trial a run.

    Each trial trains an ordinary run (`mmpipe runs list` shows them under their study), judged on the
    validation split only; Optuna's median pruner ends a trial early when its validation macro F1 falls
    below the median of the trials before it at the same epoch (the run is `pruned`). The first trial is
    the configuration as set. The best trial's run is then evaluated on the test split, once, and goes
    through the champion/challenger decision like any run.

    The study lives in RUNS/tuning/optuna.db, named by the dataset version and the space: the same command
    again resumes it (a trial killed halfway is tried again, its run resumed), and two commands on one
    run store share it. Charts and the trials table: RUNS/tuning/STUDY/.
    Exit status: 0 searched, 2 the dataset, the space or a setting is unusable, or no trial completed.
    """
    from mmpipe.config import load_config

    settings = load_config(config, {"data_dir": data, "runs_dir": runs, "tune.trials": trials,
                                    "tune.timeout_s": timeout, "tune.parallel": parallel})
    if space is not None:
        settings = _with_space(settings, space)
    with stores_on_disk(settings) as (settings, shown):
        from mmpipe.tune.study import plan_search

        plan_search(settings)  # fail fast (exit 2) before starting Prefect: dataset, validation split, space
        start_prefect()
        from flows.tune import tune_flow

        with ProgressBar("Tune", quiet=as_json):
            summary = shown(run_flow(lambda: tune_flow(settings)))
    if as_json:
        typer.echo(json.dumps(summary))
        return
    best, evaluation, promotion = summary["best"], summary["evaluation"], summary["promotion"] or {}
    typer.echo(f"study {summary['study']}: {counted(summary['trials'], 'trial')} ({summary['completed']} completed, "
               f"{summary['pruned']} pruned, {summary['failed']} failed), {counted(summary['epochs'], 'epoch')}")
    typer.echo(f"chosen: trial {best['trial']}, run {best['run_id']}, validation macro F1 {best['val_macro_f1']:.4f} "
               f"({summary['choice']})")
    for name, value in best["params"].items():
        typer.echo(f"  {name} = {setting_value(value)}")
    metrics = evaluation["metrics"]
    typer.echo(f"on the test split ({counted(evaluation['n'], 'row')}): accuracy {metrics['accuracy']:.4f}, "
               f"macro F1 {metrics['macro_f1']:.4f}")
    if promotion:
        typer.echo(("promoted to champion: " if promotion["promoted"] else "not promoted: ")
                   + "; ".join(promotion["reasons"]))
    typer.echo(f"charts and trials: {summary['folder']}")


def _with_space(settings, path: Path):
    """The config with the space of a TOML file (its [model] and [train] tables, or a [tune.space] table)."""
    from pydantic import ValidationError

    from mmpipe.config import TuneConfig
    from mmpipe.config_layers import read_toml
    from mmpipe.errors import ConfigError

    table = read_toml(path)
    table = table.get("tune", {}).get("space", table) if isinstance(table.get("tune"), dict) else table
    try:
        tune = TuneConfig.model_validate({**settings.tune.model_dump(), "space": table})
    except ValidationError as error:
        raise ConfigError(f"invalid search space in {path}: {error.errors()[0]['msg'].removeprefix('Value error, ')}"
                          ) from None
    return settings.model_copy(update={"tune": tune})
