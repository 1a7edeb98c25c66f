"""What mmpipe's records are called on the tracking server: the experiment (the source's name), the registered
model, the params (the flattened config) and the metric names of an evaluation."""

from __future__ import annotations

import json
import re
from typing import Any

from mmpipe.ingest.version import recorded_source
from mmpipe.runs.record import RunRecord
from mmpipe.storage.urls import source_label


def source_name(record: RunRecord) -> str:
    """The source the run's dataset came from: its folder's name, or folder/file for a manifest;
    "mmpipe" when the data dir no longer says (moved, or in a bucket)."""
    source = recorded_source(record.data_dir)
    return (source_label(source) if source else "") or "mmpipe"


def registered_model_name(experiment: str) -> str:
    """A registered model name from the experiment's: letters, digits, `.`, `_` and `-`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", experiment).strip("-") or "mmpipe"


def evaluation_metrics(result: dict[str, Any]) -> dict[str, float]:
    """metrics.json as flat MLflow metric names: the test metrics by their own names (`accuracy`,
    `macro_f1`, ...), then `class/<name>/f1`, `head/<head>/macro_f1`, `baseline/<name>/accuracy`,
    `slice/<dimension>/<value>/accuracy`."""
    values: dict[str, float] = {}
    for key, value in result.get("metrics", {}).items():
        if isinstance(value, dict):
            values.update({f"{key}_{inner}": number for inner, number in value.items() if is_number(number)})
        elif is_number(value):
            values[key] = value
    for name, scores in result.get("per_class", {}).items():
        values.update({f"class/{metric_key(name)}/{score}": scores[score] for score in ("precision", "recall", "f1")})
    for head, entry in (result.get("heads") or {}).items():
        values.update({f"head/{head}/{key}": entry["metrics"][key] for key in ("accuracy", "macro_f1")
                       if is_number(entry.get("metrics", {}).get(key))})
    for name, baseline in (result.get("baselines") or {}).items():
        values.update({f"baseline/{name}/{key}": baseline[key] for key in ("accuracy", "macro_f1")
                       if is_number(baseline.get(key))})
    for dimension, entries in (result.get("slices") or {}).items():
        values.update({f"slice/{metric_key(dimension)}/{metric_key(entry['value'])}/accuracy": entry["accuracy"]
                       for entry in entries if is_number(entry.get("accuracy"))})
    return {key: float(value) for key, value in values.items()}


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"lstm_units": 64}} -> {"model.lstm_units": 64}; lists as JSON."""
    params: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | type(None)) else value
    return params


def metric_key(name: Any) -> str:
    """A class or slice name as part of an MLflow metric name (letters, digits, `_ - . /` and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-. ]+", "_", str(name)) or "_"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
