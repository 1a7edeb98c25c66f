"""What a search shows: its trials as rows, its best trial, and Optuna's charts of it (RUNS/tuning/<study>/)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.files import atomic_path
from mmpipe.tune.space import Parameter
from mmpipe.tune.study import (
    CONFIGURED,
    ERROR,
    OBJECTIVE,
    RETRY_OF,
    RUN_ID,
    VAL_LABELS,
    VAL_PREDICTED,
    Search,
    holding,
)

# Optuna's charts of a study, by file name: how the best value moved, each trial's epochs (where pruning cut them),
# and which settings mattered (Optuna's default evaluator, PED-ANOVA, over the finished trials).
CHARTS = {"history.png": ("plot_optimization_history", "trial", "validation macro F1"),
          "epochs.png": ("plot_intermediate_values", "epoch", "validation macro F1"),
          "importance.png": ("plot_param_importances", None, None)}
STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def trial_rows(study, parameters: list[Parameter]) -> list[dict[str, Any]]:
    """One row per trial, in order: state, value, epochs trained, run, settings (plain values: artifacts are JSON)."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = STATES.get(trial.state.name, trial.state.name.lower())
        if trial.state.name == "FAIL" and ERROR not in trial.user_attrs:
            state = "interrupted"
        settings = {parameter.name: _plain(parameter.value_of(trial.params[parameter.name]))
                    for parameter in parameters if parameter.name in trial.params}
        rows.append({"trial": trial.number, "state": state, OBJECTIVE: trial.value,
                     "epochs": len(trial.intermediate_values), "run_id": trial.user_attrs.get(RUN_ID),
                     "retry_of": trial.user_attrs.get(RETRY_OF), "error": trial.user_attrs.get(ERROR), **settings})
    return rows


def best_trial(study):
    """The completed trial with the highest value (the earliest of equals), or None."""
    completed = [trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"]
    return max(completed, key=lambda trial: (trial.value, -trial.number)) if completed else None


def chosen_trial(study, min_confidence: float, seed: int = 0) -> tuple[Any, str]:
    """The trial whose run the search hands on, and why. The highest validation score of many trials is optimistic
    (it is the maximum of noisy estimates on a few hundred rows), so the best replaces the first trial (the
    configuration as set) only when it beats it on at least `min_confidence` of paired bootstrap resamples of the
    validation rows; else the configuration as set is kept."""
    best = best_trial(study)
    first = next((trial for trial in study.get_trials(deepcopy=False)
                  if trial.user_attrs.get(CONFIGURED) and trial.state.name == "COMPLETE"), None)
    if best is None or first is None or best.number == first.number:
        return best, "the best validation macro F1" if best is not None else "no trial completed"
    if VAL_PREDICTED not in best.user_attrs or VAL_PREDICTED not in first.user_attrs:
        return best, "the best validation macro F1 (no validation predictions to compare)"
    share = share_better(np.array(best.user_attrs[VAL_LABELS]), np.array(best.user_attrs[VAL_PREDICTED]),
                         np.array(first.user_attrs[VAL_PREDICTED]), seed)
    said = (f"trial {best.number} beats the configuration as set (trial {first.number}) on {share:.0%} of "
            f"{RESAMPLES} paired bootstrap resamples of the validation rows")
    if share >= min_confidence:
        return best, said
    return first, f"the configuration as set kept: {said}, below [tune] min_confidence {min_confidence:g}"


RESAMPLES = 1000


def share_better(labels: np.ndarray, ours: np.ndarray, theirs: np.ndarray, seed: int = 0) -> float:
    """The share of paired bootstrap resamples of the rows on which `ours` has the higher macro F1 (ties: half)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(labels), (RESAMPLES, len(labels)))
    classes = int(max(labels.max(), ours.max(), theirs.max())) + 1
    scores = [_macro_f1(labels[rows], predicted[rows], classes) for predicted in (ours, theirs)]
    return float(np.mean(scores[0] > scores[1]) + 0.5 * np.mean(scores[0] == scores[1]))


def _macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Macro F1 of each row of [resamples, n] labels and predictions, over the classes each resample has (as
    mmpipe.evaluate.metrics defines it: a class seen as a label or a prediction)."""
    offsets = (np.arange(len(labels)) * classes * classes)[:, None]
    confusion = np.bincount((offsets + labels * classes + predicted).ravel(),
                            minlength=len(labels) * classes * classes).reshape(len(labels), classes, classes)
    hits = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    support, said = confusion.sum(axis=2), confusion.sum(axis=1)
    f1 = np.divide(2 * hits, support + said, out=np.zeros_like(hits), where=(support + said) > 0)
    seen = (support + said) > 0
    return (f1 * seen).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)


def study_summary(study, search: Search) -> dict[str, Any]:
    """The object `mmpipe tune --json` prints, less the evaluation and the promotion; `best` is the chosen trial."""
    trials = study.get_trials(deepcopy=False)
    best, choice = chosen_trial(study, search.config.tune.min_confidence, search.config.seed)
    return {
        "study": search.name, "dataset_version": search.dataset_version, "trials": len(holding(trials)),
        "completed": sum(trial.state.name == "COMPLETE" for trial in trials),
        "pruned": sum(trial.state.name == "PRUNED" for trial in trials),
        "failed": sum(trial.state.name == "FAIL" and ERROR in trial.user_attrs for trial in trials),
        "epochs": sum(len(trial.intermediate_values) for trial in trials),
        "best": None if best is None else {
            "trial": best.number, "run_id": best.user_attrs.get(RUN_ID), OBJECTIVE: best.value,
            "params": {parameter.name: _plain(parameter.value_of(best.params[parameter.name]))
                       for parameter in search.parameters if parameter.name in best.params}},
        "choice": choice, "storage": str(search.runs_dir / "tuning"), "folder": str(search.folder),
    }


def write_charts(study, folder: Path) -> dict[str, Path]:
    """Optuna's charts of the study as PNGs in `folder`; a chart the trials cannot draw yet (importance needs two
    finished trials that differ) is left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import optuna.visualization.matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (function, x_label, y_label) in CHARTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" and "no intermediate values": not the user's concern
            try:
                axes = getattr(plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
        if x_label:
            axes.set_xlabel(x_label)
            axes.set_ylabel(y_label)
        figure = axes.figure
        figure.set_size_inches(8, 4.5)
        with atomic_path(folder / name, suffix=".png") as temp:
            figure.savefig(temp, dpi=100, bbox_inches="tight", metadata={"Software": None})
        import matplotlib.pyplot as pyplot

        pyplot.close(figure)
        written[name] = folder / name
    return written


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
