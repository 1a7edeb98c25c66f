"""The run store: read-only views over RUNS/ (list, show, compare) and the champion pointer.

There is no index to keep in step: each run's files are the truth (written atomically, so a
reader never sees half a file), and listing reads only run.json and metrics.json. The champion
pointer RUNS/champion.json changes only under an exclusive lock (see `champion_lock`). The
layout of one run dir and its record are in record.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmpipe.errors import RunStoreError
from mmpipe.files import hold_lock, write_json_atomic
from mmpipe.runs.record import RunDir, RunRecord, load_record, status_of

# Beside the run dirs: the champion pointer and the lock that serializes changing it.
CHAMPION_FILE = "champion.json"
_LOCK_FILE = ".champion.lock"
# A promotion decision and pointer being published; the next holder of the lock finishes it (evaluate/promote.py).
PENDING_FILE = ".champion.pending"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the store; None when it does not exist, RunStoreError naming it when it is damaged."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise RunStoreError(f"{path} is damaged ({error}); it was written by something other than mmpipe, or "
                            "the disk lost it") from None
    if not isinstance(content, dict):
        raise RunStoreError(f"{path} is damaged (not a JSON object)")
    return content


def read_metrics(path: Path) -> dict[str, Any] | None:
    """An evaluation's metrics.json, or None; RunStoreError naming it when it is damaged or of another shape
    (the views read `metrics` and `per_class` as objects)."""
    content = read_json(path)
    if content is None:
        return None
    for key in ("metrics", "per_class"):
        if not isinstance(content.get(key, {}), dict):
            raise RunStoreError(f"{path} is damaged ({key}: not a JSON object); evaluate the run again")
    if not all(isinstance(scores, dict) for scores in content.get("per_class", {}).values()):
        raise RunStoreError(f"{path} is damaged (per_class: a class's scores are not a JSON object); evaluate the "
                            "run again")
    return content


def load_run(runs_dir: Path, run_id: str) -> RunRecord:
    """The record of RUNS/<run_id>; RunStoreError when there is no such run or it cannot be read."""
    return load_record(RunDir(Path(runs_dir) / run_id))


def read_champion(runs_dir: Path) -> dict[str, Any] | None:
    """The champion pointer, or None; RunStoreError (saying how to repair it) when it is damaged."""
    path = Path(runs_dir) / CHAMPION_FILE
    try:
        pointer = read_json(path)
        if pointer is not None and not isinstance(pointer.get("run_id"), str):
            raise RunStoreError(f"{path} is damaged (no run_id)")
        return pointer
    except RunStoreError as error:
        raise RunStoreError(f"{error}; delete it and run `mmpipe evaluate RUN_ID` on the run that should be "
                            "champion") from None


def champion_lock(runs_dir: Path):
    """Exclusive across processes: read champion -> decide -> write pointer happens as one step."""
    return hold_lock(Path(runs_dir) / _LOCK_FILE)


def set_champion(runs_dir: Path, pointer: dict[str, Any]) -> None:
    """Replace the champion pointer atomically; call inside `champion_lock`."""
    write_json_atomic(Path(runs_dir) / CHAMPION_FILE, pointer)


def list_runs(runs_dir: Path, dataset_version: str | None = None) -> list[dict[str, Any]]:
    """One row per run, newest first (run ids sort by start time); optionally only one dataset's runs."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    try:
        champion = (read_champion(runs_dir) or {}).get("run_id")
    except RunStoreError:
        champion = None  # `mmpipe runs champion` says what is wrong with it; the list goes on
    rows = []
    for path in sorted((path for path in runs_dir.iterdir() if path.is_dir()), reverse=True):
        run = RunDir(path)
        if not run.record.is_file():
            continue
        try:
            record = load_record(run)
        except RunStoreError as error:  # one broken run must not hide the others
            rows.append({"run_id": run.run_id, "started_at": None, "status": "damaged", "variant": None,
                         "dataset_version": None, "accuracy": None, "macro_f1": None, "champion": False,
                         "problem": str(error), "study": None, "trial": None})
            continue
        if dataset_version and record.dataset_version != dataset_version:
            continue
        problem = None
        try:
            metrics = (read_metrics(run.metrics) or {}).get("metrics", {})
        except RunStoreError as error:
            metrics, problem = {}, str(error)
        rows.append({
            "run_id": record.run_id, "started_at": record.started_at, "status": status_of(record),
            "variant": record.variant, "dataset_version": record.dataset_version,
            "accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
            "champion": record.run_id == champion, "problem": problem,
            "study": (record.study or {}).get("name"), "trial": (record.study or {}).get("trial"),
        })
    return rows


def show_run(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """Everything recorded about a run: run.json, its primary metrics, promotion and other evaluations."""
    run = RunDir(Path(runs_dir) / run_id)
    record = load_record(run)
    evaluations = sorted(path.parent.name for path in (run.path / RunDir.EVALUATIONS).glob(f"*/{RunDir.METRICS}"))
    return {**record.model_dump(mode="json"), "status": status_of(record), "run_dir": str(run.path.absolute()),
            "evaluation": read_metrics(run.metrics),
            "promotion": read_json(run.promotion), "other_evaluations": evaluations,
            "champion": (read_champion(runs_dir) or {}).get("run_id") == run_id}


def compare_runs(runs_dir: Path, first: str, second: str) -> dict[str, Any]:
    """What changed from run `first` to run `second`: metrics, per-class F1, config, dataset."""
    a, b = show_run(runs_dir, first), show_run(runs_dir, second)
    metrics_a = (a["evaluation"] or {}).get("metrics", {})
    metrics_b = (b["evaluation"] or {}).get("metrics", {})
    deltas = {key: _delta(metrics_a.get(key), metrics_b.get(key))
              for key in sorted(set(metrics_a) | set(metrics_b)) if not isinstance(metrics_a.get(key), dict)}
    classes_a = (a["evaluation"] or {}).get("per_class", {})
    classes_b = (b["evaluation"] or {}).get("per_class", {})
    per_class = {name: _delta(classes_a.get(name, {}).get("f1"), classes_b.get(name, {}).get("f1"))
                 for name in sorted(set(classes_a) | set(classes_b))}
    config_a, config_b = _flatten(a["config"]), _flatten(b["config"])
    config_diff = {key: {"a": config_a.get(key), "b": config_b.get(key)}
                   for key in sorted(set(config_a) | set(config_b)) if config_a.get(key) != config_b.get(key)}
    counts_a = a.get("lineage", {}).get("counts", {})
    counts_b = b.get("lineage", {}).get("counts", {})
    return {
        "a": first, "b": second, "metrics": deltas, "per_class_f1": per_class, "config": config_diff,
        "dataset": {"a": a["dataset_version"], "b": b["dataset_version"],
                    "same": a["dataset_version"] == b["dataset_version"],
                    "rows": {split: _delta(sum(counts_a.get(split, {}).values()), sum(counts_b.get(split, {}).values()))
                             for split in sorted(set(counts_a) | set(counts_b))}},
    }


def _delta(a: Any, b: Any) -> dict[str, Any]:
    change = round(b - a, 6) if isinstance(a, int | float) and isinstance(b, int | float) else None
    return {"a": a, "b": b, "delta": change}


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, inner in value.items():
        if isinstance(inner, dict):
            flat.update(_flatten(inner, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = inner
    return flat
