"""The search against the default, on datasets nobody here made, and what pruning saves, in one run.

    python bench/tune.py [--write docs/benchmarks.md] [--datasets emoji,oxygen] [--trials 20]

Each dataset (bench/datasets.py) is ingested at 32 px (a 2-core machine trains a 20-trial study in minutes
there, not an hour) and validated. Then `mmpipe.tune` searches the default `[tune.space]` with the default
`[tune]` settings: TPE seeded by the config's seed, the median pruner, the first trial the default
configuration. The first trial's run is the default's run (same split, same seed); the best trial's run is
the search's. Both are evaluated on the test split here for the report only (the search chose on validation;
`mmpipe tune` evaluates its best run alone). Noise: the standard deviation of (best - default) test macro F1
over 500 paired bootstrap resamples of the test rows.

What pruning saves, on the same trials: every pruned trial is trained again with its settings and no pruner;
the unpruned search's epochs are the completed trials' epochs plus those. The report says whether one of the
pruned trials, run whole, would have beaten the search's best on validation (pruning lost the best).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ingest import write_section  # noqa: E402
from model import prepare  # noqa: E402

SECTION = "tune"
DATASETS = ["emoji", "oxygen"]
SIZE = 32
BOOTSTRAP = 500
# The target: the search's test macro F1 beats the default's by this much on at least one dataset.
TARGET_GAIN = 0.03
TARGET_SAVED = 0.40


def search(data: Path, trials: int, pruning_check: bool = True) -> dict:
    import shutil

    from mmpipe.config import load_config
    from mmpipe.evaluate import evaluate_run
    from mmpipe.runs.record import RunDir, load_record
    from mmpipe.train import train
    from mmpipe.tune.results import best_trial, chosen_trial, study_summary
    from mmpipe.tune.space import apply
    from mmpipe.tune.study import load_study, plan_search, run_trials, served_val_macro_f1

    runs = data.parent / f"{data.name}-runs"
    shutil.rmtree(runs, ignore_errors=True)
    config = load_config(None, {"data_dir": str(data), "runs_dir": str(runs), "image.size": SIZE,
                                "tune.trials": trials, "train.export_serving": False}, environ={})
    plan = plan_search(config)
    started = time.perf_counter()
    outcomes = list(run_trials(plan))
    seconds = time.perf_counter() - started
    study = load_study(plan)
    summary = study_summary(study, plan)
    first = next(outcome for outcome in outcomes if outcome["trial"] == 0)
    best, choice = chosen_trial(study, config.tune.min_confidence, config.seed)
    best_on_validation = best_trial(study)
    default_eval = evaluate_run(runs / first["run_id"], config.evaluate).result
    best_eval = evaluate_run(runs / best.user_attrs["run_id"], config.evaluate).result
    # For the report only: what taking the best on validation would have given on test.
    top_eval = evaluate_run(runs / best_on_validation.user_attrs["run_id"], config.evaluate).result
    # The same pruned trials, run whole: the unpruned search's epochs, and whether pruning lost the best.
    trial_epochs = {outcome["trial"]: len(load_record(RunDir(runs / outcome["run_id"])).history)
                    for outcome in outcomes if outcome["run_id"]}
    pruned_again, rerun_seconds = [], time.perf_counter()
    unpruned = config.model_copy(update={"runs_dir": runs.parent / f"{runs.name}-unpruned"})
    for outcome in outcomes:
        if outcome["state"] == "pruned" and pruning_check:
            result = train(apply(unpruned, outcome["params"]))
            pruned_again.append({"trial": outcome["trial"], "epochs": len(load_record(RunDir(result.run_dir)).history),
                                 "val_macro_f1": served_val_macro_f1(RunDir(result.run_dir))})
    completed_epochs = sum(trial_epochs[o["trial"]] for o in outcomes if o["state"] == "completed")
    with_pruning = sum(trial_epochs.values())
    without = completed_epochs + sum(item["epochs"] for item in pruned_again)
    return {"seconds": seconds, "rerun_seconds": time.perf_counter() - rerun_seconds, "summary": summary,
            "default": {"val": first["val_macro_f1"], **_test(default_eval)},
            "best": {"trial": best.number, "val": best.value, **_test(best_eval)}, "choice": choice,
            "best_on_validation": {"trial": best_on_validation.number, "val": best_on_validation.value,
                                   **_test(top_eval)},
            "noise": _paired_noise(RunDir(runs / first["run_id"]).predictions,
                                   RunDir(runs / best.user_attrs["run_id"]).predictions),
            "epochs_pruned_search": with_pruning, "epochs_unpruned_search": without if pruning_check else None,
            "pruned_again": pruned_again, "lost_best": any(item["val_macro_f1"] > best.value for item in pruned_again),
            "test_rows": best_eval["n"], "params": summary["best"]["params"]}


def _test(evaluation: dict) -> dict:
    return {"test_macro_f1": evaluation["metrics"]["macro_f1"], "test_accuracy": evaluation["metrics"]["accuracy"]}


def _paired_noise(default_predictions: Path, best_predictions: Path) -> float:
    """Std of the difference in macro F1 over paired bootstrap resamples of the test rows."""
    import numpy as np
    import pyarrow.parquet as pq

    from mmpipe.evaluate.metrics import classification_metrics

    a, b = pq.read_table(default_predictions), pq.read_table(best_predictions)
    classes = json.loads(a.schema.metadata[b"classes"])
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    labels = np.array([classes.index(name) for name in a.column("label").to_pylist()])
    pa_, pb = (np.array(table.column("probabilities").to_pylist()) for table in (a, b))
    rng = np.random.default_rng(0)
    differences = []
    for _ in range(BOOTSTRAP):
        rows = rng.integers(0, len(labels), len(labels))
        score = [classification_metrics(labels[rows], probabilities[rows], classes)["metrics"]["macro_f1"]
                 for probabilities in (pa_, pb)]
        differences.append(score[1] - score[0])
    return float(np.std(differences))


def render(results: dict[str, dict], command: str, trials: int, held_out: bool = False) -> str:
    section = f"{SECTION}-held-out" if held_out else SECTION
    lines = [f"<!-- bench:{section} -->", "### Held out: run only after the choice rule was frozen" if held_out
             else "## Tuning (`bench/tune.py`)", "",
             f"Command: `{command}`. Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, 2 cores, CPU only. "
             f"Each dataset at {SIZE} px, 80/10/10 splits; `mmpipe.tune` with the default `[tune]` settings and "
             f"space, {trials} trials, the first of them the default configuration (its run is the default's "
             "below: same split, same seed). The search chose on validation only; both runs are evaluated on test "
             f"here for the report. Noise: std of (best - default) test macro F1 over {BOOTSTRAP} paired bootstrap "
             "resamples of the test rows. Neither dataset was looked at while the space and the pruner's settings "
             "were chosen (they were set before the first measurement, from the model benchmark's defaults).", "",
             "| dataset | test rows | default: val / test macro F1 | chosen: trial, val / test macro F1 | "
             "test gain (noise) | best on validation: trial, val / test macro F1 | wall time | "
             "trials completed / pruned / failed |",
             "|---|---:|---|---|---:|---|---:|---|"]
    for name, found in results.items():
        summary, default, best = found["summary"], found["default"], found["best"]
        lines.append(f"| {name} | {found['test_rows']} | {default['val']:.3f} / {default['test_macro_f1']:.3f} | "
                     f"#{best['trial']}: {best['val']:.3f} / {best['test_macro_f1']:.3f} | "
                     f"{best['test_macro_f1'] - default['test_macro_f1']:+.3f} ({found['noise']:.3f}) | "
                     f"#{found['best_on_validation']['trial']}: {found['best_on_validation']['val']:.3f} / "
                     f"{found['best_on_validation']['test_macro_f1']:.3f} | "
                     f"{found['seconds'] / 60:.1f} min | {summary['completed']} / {summary['pruned']} / "
                     f"{summary['failed']} |")
    checked = {name: found for name, found in results.items() if found["epochs_unpruned_search"]}
    if checked:
        lines += ["", "What pruning saved, on the same trials (each pruned trial trained again whole, unpruned):",
                  "", "| dataset | epochs with pruning | epochs without | saved | a pruned trial would have won |",
                  "|---|---:|---:|---:|---|"]
        for name, found in checked.items():
            saved = 1 - found["epochs_pruned_search"] / found["epochs_unpruned_search"]
            lines.append(f"| {name} | {found['epochs_pruned_search']} | {found['epochs_unpruned_search']} | "
                         f"{saved:.0%} | {'yes' if found['lost_best'] else 'no'} |")
    lines += ["", "Why each run was chosen:", "", *(f"* {name}: {found['choice']}" for name, found in results.items())]
    lines += ["", "Chosen settings:", ""]
    for name, found in results.items():
        lines.append(f"* {name}: " + ", ".join(f"{key.split('.')[1]} {json.dumps(value)}"
                                              for key, value in found["params"].items()))
    gains = [found["best"]["test_macro_f1"] - found["default"]["test_macro_f1"] for found in results.values()]
    lines += ["", f"Target: a test gain >= {TARGET_GAIN} on at least one dataset ("
              f"{'met' if any(gain >= TARGET_GAIN for gain in gains) else '**not met**'}), never below the default "
              "by more than noise; pruning saves >= 40% of the epochs ("
              + (", ".join(f"{name} {1 - found['epochs_pruned_search'] / found['epochs_unpruned_search']:.0%}"
                           for name, found in checked.items()) or "not measured here") + ").",
              f"<!-- /bench:{section} -->", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, of bench/model.py's")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--write", type=Path, default=None, help="update this Markdown file's tune section")
    parser.add_argument("--held-out", action="store_true", help="a set built after the choices were frozen: its own "
                        "section, and no pruning check (measured on the others)")
    args = parser.parse_args()
    command = "python bench/tune.py" + (f" --datasets {args.datasets}" if args.datasets != "emoji,oxygen" else "") \
        + (f" --trials {args.trials}" if args.trials != 20 else "") + (" --held-out" if args.held_out else "") \
        + (f" --write {args.write}" if args.write else "")
    results = {}
    for name in args.datasets.split(","):
        results[name] = search(prepare(name, SIZE), args.trials, pruning_check=not args.held_out)
        print(json.dumps({name: results[name]}, default=str), flush=True)
    section = render(results, command, args.trials, args.held_out)
    print(section)
    if args.write:
        write_section(args.write, section, f"{SECTION}-held-out" if args.held_out else SECTION)


if __name__ == "__main__":
    main()
