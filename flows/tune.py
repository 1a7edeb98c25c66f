"""The tune flow: an Optuna study's trials as Prefect tasks, `[tune] parallel` at a time; then the chosen trial's run
evaluated on test once and through the champion/challenger decision, like any run; the study as artifacts.

`plan-search` -> `trial` (one task per trial, each training an ordinary run, pruned or not) -> `evaluate` (subflow,
the chosen run only) -> `tuning-study` (markdown), `tuning-trials` (table), the study's charts (images).
"""

from __future__ import annotations

import base64
import contextlib
from concurrent.futures import Executor
from functools import partial
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows.artifacts import TUNING_CHART, TUNING_STUDY, TUNING_TRIALS, artifact_key
from flows.evaluate import evaluate_flow
from flows.progress import PROGRESS_EXTRA, stage
from flows.train import epoch_reporter
from mmpipe.config import Config
from mmpipe.runs.record import RunDir
from mmpipe.runs.store import read_json, read_metrics
from mmpipe.tune.results import study_summary, trial_rows, write_charts
from mmpipe.tune.space import configured
from mmpipe.tune.study import (
    OBJECTIVE,
    Search,
    deadline_after,
    has_room,
    in_processes,
    load_study,
    next_trial_number,
    plan_search,
    run_next_trial,
)
from mmpipe.wording import counted


@task(name="plan-search", cache_policy=NO_CACHE, persist_result=False)
def plan_search_task(config: Config) -> Search:
    return plan_search(config)


@task(name="trial", cache_policy=NO_CACHE, persist_result=False)
def trial_task(search: Search, deadline: float | None, processes: Executor | None) -> dict | None:
    if processes is None:  # here: its epochs in this task's logs and progress
        return run_next_trial(search, deadline,
                              lambda number: [epoch_reporter(search.config.train.epochs, f"trial {number}")])
    return processes.submit(run_next_trial, search, deadline).result()


@flow(name="tune", flow_run_name="tune {config.data_dir}")
def tune_flow(config: Config) -> dict:
    """Search [tune.space] on the dataset in config.data_dir (validated); evaluate and judge the chosen run."""
    search = plan_search_task(config)
    logger = get_run_logger()
    logger.info("study %s: %s of %s, %s at a time", search.name, counted(config.tune.trials, "trial"),
                ", ".join(parameter.name for parameter in search.parameters), config.tune.parallel)
    outside = configured(config, search.parameters)[1]
    if config.tune.start_with_config and outside:
        logger.warning("the first trial is the configuration as set but for %s: outside [tune.space], sampled",
                       ", ".join(outside))
    deadline = deadline_after(config.tune.timeout_s)
    processes = in_processes(config.tune.parallel)
    with processes or contextlib.nullcontext():
        _run_trials(search, deadline, processes)
    study = load_study(search)
    summary = study_summary(study, search)
    if summary["best"] is None:
        _raise_no_best(search, summary)
    best = summary["best"]
    stage(f"evaluating the chosen trial's run {best['run_id']} on the test split")
    summary["evaluation"], summary["promotion"] = _evaluate_once(best["run_id"], config)
    _publish(search, study, summary, config)
    return summary


def _run_trials(search: Search, deadline: float | None, processes: Executor | None) -> None:
    """Keep `parallel` trial tasks running while the study has room (a task that finds it full ends at once)."""
    logger, total = get_run_logger(), search.config.tune.trials
    started = 0

    def start():
        nonlocal started
        started += 1
        # One at a time, the next trial's number is known before it is asked for; side by side, only a slot.
        number = next_trial_number(search) if processes is None else None
        name = f"trial {number}" if number is not None else f"trial (slot {started})"
        return trial_task.with_options(task_run_name=name).submit(search, deadline, processes)

    running = [start() for _ in range(search.config.tune.parallel) if has_room(search, deadline)]
    while running:
        done = next(as_completed(running))
        running.remove(done)
        outcome = done.result()
        if outcome is None:
            continue
        value = f", validation macro F1 {outcome[OBJECTIVE]:.4f}" if outcome[OBJECTIVE] is not None else ""
        detail = f": {outcome['detail']}" if outcome["state"] == "failed" else ""
        progress = (outcome["trial"] + 1, total, f"trial {outcome['trial']} {outcome['state']}")
        logger.info("trial %d %s in %.0f s%s%s (run %s)", outcome["trial"], outcome["state"], outcome["seconds"],
                    value, detail, outcome["run_id"] or "-", extra={PROGRESS_EXTRA: progress})
        if has_room(search, deadline):
            running.append(start())


def _raise_no_best(search: Search, summary: dict) -> None:
    from mmpipe.errors import TuningError

    raise TuningError(f"study {search.name}: no trial completed ({summary['pruned']} pruned, {summary['failed']} "
                      f"failed: their errors are in `mmpipe tune --json` and {search.folder}); widen [tune.space] or "
                      "raise [tune] trials")


def _evaluate_once(run_id: str, config: Config) -> tuple[dict, dict | None]:
    """The run's test-split evaluation and promotion decision: made now, or read back when a tune command before this
    one made them (the test split is touched once)."""
    run = RunDir(Path(config.runs_dir).absolute() / run_id)
    metrics, decision = read_metrics(run.metrics), read_json(run.promotion)
    if metrics is not None and decision is not None:
        return {key: metrics[key] for key in ("split", "dataset_version", "n", "metrics")}, decision
    evaluated = evaluate_flow(run_id, config)
    return {key: evaluated[key] for key in ("split", "dataset_version", "n", "metrics")}, evaluated.get("promotion")


def _publish(search: Search, study, summary: dict, config: Config) -> None:
    """The study in the UI: what was found (markdown), every trial (table), and Optuna's charts (images)."""
    key = partial(artifact_key, data_dir=config.data_dir)
    rows = trial_rows(study, search.parameters)
    create_table_artifact(key=key(TUNING_TRIALS), table=rows,
                          description=f"Study {search.name}: {counted(len(rows), 'trial')}")
    create_markdown_artifact(key=key(TUNING_STUDY), markdown=study_markdown(summary),
                             description=f"Study {search.name}: chosen run {summary['best']['run_id']}")
    for name, path in write_charts(study, search.folder).items():
        create_image_artifact(key=key(f"{TUNING_CHART}-{Path(name).stem}"),
                              image_url=f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}",
                              description=f"Study {search.name}: {Path(name).stem}")


def study_markdown(summary: dict) -> str:
    best, promotion = summary["best"], summary.get("promotion") or {}
    test = summary["evaluation"]["metrics"]
    verdict = "promoted to champion" if promotion.get("promoted") else "not promoted"
    return "\n".join([
        f"# Study `{summary['study']}` on dataset `{summary['dataset_version']}`", "",
        f"{summary['trials']} trials: {summary['completed']} completed, {summary['pruned']} pruned, "
        f"{summary['failed']} failed; {summary['epochs']} epochs trained in all.", "",
        f"**Chosen**: trial {best['trial']}, run `{best['run_id']}`, validation macro F1 **{best[OBJECTIVE]:.4f}** "
        f"({summary['choice']}); "
        f"on the test split (once) macro F1 {test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}: {verdict}"
        + (": " + "; ".join(promotion.get("reasons", [])) if promotion else "") + ".", "",
        "| setting | value |", "|---|---|",
        *(f"| {name} | `{f'{value:.4g}' if isinstance(value, float) else value}` |"
          for name, value in best["params"].items()),
        "", f"Charts and the trials: `{summary['folder']}`; the study: `{summary['storage']}`.",
    ])
