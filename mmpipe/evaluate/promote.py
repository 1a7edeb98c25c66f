"""Champion / challenger: promote an evaluated run only if it beats the champion on the same test set.

Rules (settings in [evaluate]): a run whose accuracy does not beat always predicting the test set's
largest class by `min_gain_over_majority` is never promoted; otherwise the first evaluated run becomes
champion, and after that a challenger is promoted when its macro F1 beats the champion's by at least
`promote_margin` and no class's F1 drops by more than `max_class_f1_drop`, both measured on the
challenger's own test split (the champion is evaluated on it if it has not been). The decision and
its reasons are written once to RUNS/<run_id>/promotion.json; the champion pointer changes under a lock,
together with the decision that moved it (an intent file makes the pair whole after a kill).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mmpipe.config import EvaluateConfig
from mmpipe.errors import RunStoreError
from mmpipe.evaluate import EvaluationError, evaluate_run, existing_evaluation
from mmpipe.evaluate.report import write_report
from mmpipe.files import write_json_atomic
from mmpipe.runs.record import RunDir, load_record
from mmpipe.runs.store import PENDING_FILE, champion_lock, read_champion, read_json, read_metrics, set_champion


def promote(runs_dir: Path, run_id: str, config: EvaluateConfig) -> dict[str, Any]:
    """Decide (once) whether `run_id` replaces the champion; returns the decision.

    Raises:
        EvaluationError: the run has no primary evaluation yet (`mmpipe evaluate RUN_ID`).
    """
    runs_dir = Path(runs_dir).absolute()
    run = RunDir(runs_dir / run_id)
    record = load_record(run)
    decided = read_json(run.promotion)
    if decided is not None:  # runs are immutable once decided; a publication a crash cut short is finished
        with champion_lock(runs_dir):
            _finish_pending(runs_dir)
        return decided
    ours = read_metrics(run.metrics)
    if ours is None:
        raise EvaluationError(f"run {run_id} has not been evaluated on its test split: run `mmpipe evaluate {run_id}`")
    with champion_lock(runs_dir):
        _finish_pending(runs_dir)  # first: the pointer this decision is judged against must be the true one
        decided = read_json(run.promotion)  # again: another process may have decided meanwhile
        if decided is not None:
            return decided
        champion = read_champion(runs_dir)
        floor = _beats_the_majority(ours, config)
        if floor is not None:  # a model no better than a constant is never a champion, not even the first
            promoted, reasons, theirs = False, [floor], None
        elif champion and champion["run_id"] == run_id:
            promoted, reasons, theirs = True, ["already the champion"], ours["metrics"]["macro_f1"]
        else:
            promoted, reasons, theirs = _judge(runs_dir, ours, champion, config)
        decision = {
            "run_id": run_id, "promoted": promoted, "reasons": reasons,
            "champion_before": champion["run_id"] if champion else None,
            "test_set": {"dataset_version": ours["dataset_version"], "split": ours["split"], "n": ours["n"]},
            "macro_f1": ours["metrics"]["macro_f1"], "champion_macro_f1": theirs,
            "rules": {"promote_margin": config.promote_margin, "max_class_f1_drop": config.max_class_f1_drop,
                      "min_gain_over_majority": config.min_gain_over_majority},
            "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _publish(runs_dir, decision, _pointer(decision, record.variant) if promoted else None)
    write_report(run, record, ours)  # the report shows the decision
    return decision


def _pointer(decision: dict[str, Any], variant: str) -> dict[str, Any]:
    return {"run_id": decision["run_id"], "macro_f1": decision["macro_f1"],
            "dataset_version": decision["test_set"]["dataset_version"], "variant": variant,
            "promoted_at": decision["decided_at"], "previous": decision["champion_before"]}


def _publish(runs_dir: Path, decision: dict[str, Any], pointer: dict[str, Any] | None) -> None:
    """Write the decision and, if promoted, the champion pointer as one step that a kill cannot cut in half:
    the intent first (RUNS/.champion.pending), then each file, then the intent is removed. Call inside
    `champion_lock`; the next holder of the lock finishes an intent it finds, before it decides anything,
    so no later decision is judged against a pointer that a dead process left behind."""
    pending = runs_dir / PENDING_FILE
    write_json_atomic(pending, {"decision": decision, "pointer": pointer})
    _apply(runs_dir, decision, pointer)
    pending.unlink()


def _finish_pending(runs_dir: Path) -> None:
    """Finish the publication a killed process left (see `_publish`); call inside `champion_lock`."""
    intent = read_json(runs_dir / PENDING_FILE)
    if intent is None:
        return
    _apply(runs_dir, intent["decision"], intent["pointer"])
    (runs_dir / PENDING_FILE).unlink()


def _apply(runs_dir: Path, decision: dict[str, Any], pointer: dict[str, Any] | None) -> None:
    promotion = RunDir(runs_dir / decision["run_id"]).promotion
    if read_json(promotion) is None:  # written once: a decision is never rewritten
        write_json_atomic(promotion, decision)
    if pointer is not None:
        set_champion(runs_dir, pointer)


def _beats_the_majority(ours: dict, config: EvaluateConfig) -> str | None:
    """None when the run beats always predicting the largest class by `min_gain_over_majority`; else why not."""
    majority = (ours.get("baselines") or {}).get("majority")
    if majority is None:
        return None
    gain = ours["metrics"]["accuracy"] - majority["accuracy"]
    if gain >= config.min_gain_over_majority:
        return None
    return (f"accuracy {ours['metrics']['accuracy']:.4f} does not beat always predicting {majority['class']!r} "
            f"({majority['accuracy']:.4f}) by min_gain_over_majority {config.min_gain_over_majority}")


def _judge(runs_dir: Path, ours: dict, champion: dict | None,
           config: EvaluateConfig) -> tuple[bool, list[str], float | None]:
    if champion is None:
        return True, ["no champion yet: the first evaluated run becomes champion"], None
    champion_dir = runs_dir / champion["run_id"]
    try:
        theirs = existing_evaluation(champion_dir, ours["dataset_version"], "test") or evaluate_run(
            champion_dir, config, split="test", data_dir=Path(ours["data_dir"])).result
    except (EvaluationError, RunStoreError) as error:  # e.g. other classes or image size, or its dir deleted
        return True, [f"the champion {champion['run_id']} cannot be scored on this test set ({error})"], None
    # Macro F1 over the classes this test set has: a class only one model knows (absent here)
    # would count as F1 0 against it and skew the comparison.
    present = [name for name, scores in ours["per_class"].items() if scores["support"] > 0]
    mine = sum(ours["per_class"][name]["f1"] for name in present) / max(1, len(present))
    their_f1 = sum(theirs["per_class"].get(name, {}).get("f1", 0.0) for name in present) / max(1, len(present))
    gain = mine - their_f1
    where = f"on the test split of {ours['dataset_version']} ({ours['n']} rows, {len(present)} classes)"
    reasons = [f"macro F1 {mine:.4f} vs champion {champion['run_id']} {their_f1:.4f} {where}: {gain:+.4f} "
               f"({'meets' if gain >= config.promote_margin else 'below'} the margin {config.promote_margin})"]
    drops = []
    for name in present:
        scores = ours["per_class"][name]
        before = theirs["per_class"].get(name, {}).get("f1")
        if before is not None and before - scores["f1"] > config.max_class_f1_drop:
            drops.append(name)
            reasons.append(f"class {name}: F1 drops from {before:.4f} to {scores['f1']:.4f} "
                           f"(more than max_class_f1_drop {config.max_class_f1_drop})")
    return gain >= config.promote_margin and not drops, reasons, their_f1
