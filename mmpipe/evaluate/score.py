"""Score a finished run on a held-out split and persist the results beside it.

The run's own test split (the dataset version it trained on) is its primary evaluation:
RUNS/<run_id>/metrics.json, predictions.parquet, confusion_matrix.png, report.html. Any other
split or dataset version (a newly arrived batch, say) goes to
RUNS/<run_id>/evaluations/<dataset_version>-<split>/, so evaluating never edits run.json and a
run's primary numbers never change under it. metrics.json is written last: when it exists, the
evaluation is complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmpipe.config import EvaluateConfig
from mmpipe.errors import EvaluationError
from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.evaluate.slices import slice_metrics
from mmpipe.files import atomic_path, disk_full_named, write_json_atomic
from mmpipe.ingest.version import DatasetVersion, data_dir_lock, load_dataset
from mmpipe.runs.record import RunDir, RunRecord, load_record
from mmpipe.runs.store import read_metrics
from mmpipe.train.inputs import make_dataset, split_rows

_LATENCY_SAMPLES = 20



@dataclass(frozen=True)
class Evaluation:
    run_dir: Path
    out_dir: Path
    result: dict[str, Any]  # what metrics.json holds

    def summary(self) -> dict[str, Any]:
        """The object `mmpipe evaluate --json` prints."""
        keys = ("run_id", "split", "dataset_version", "n", "metrics", "baselines", "heads", "per_class",
                "low_support", "slices", "out_dir", "report")
        return {key: self.result[key] for key in keys}


def evaluation_dir(run: RunDir, record: RunRecord, dataset_version: str, split: str) -> RunDir:
    """Where the evaluation of a run on (dataset version, split) lives: the run dir itself for its own
    test split (the primary evaluation), else a folder under evaluations/ with the same file names."""
    if dataset_version == record.dataset_version and split == "test":
        return run
    return RunDir(run.evaluation(dataset_version, split))


def existing_evaluation(run_dir: Path, dataset_version: str, split: str) -> dict[str, Any] | None:
    run = RunDir(run_dir)
    path = evaluation_dir(run, load_record(run), dataset_version, split).metrics
    return read_metrics(path)


def evaluate_run(run_dir: Path, config: EvaluateConfig, *, split: str = "test",
                 data_dir: Path | None = None) -> Evaluation:
    """Predict `split` of the dataset in `data_dir` (default: the one the run trained from) and persist.

    Raises:
        EvaluationError: the run is not completed, the data dir holds no such split, or the
            dataset has labels the model does not know and cannot be scored.
    """
    run = RunDir(Path(run_dir).absolute())
    record = load_record(run)
    if record.status != "completed":
        raise EvaluationError(f"run {record.run_id} is {record.status}; only completed runs can be evaluated")
    data = Path(data_dir) if data_dir else Path(record.data_dir)
    again = f"run `mmpipe evaluate {record.run_id}` again"
    # The version cannot be replaced while it is scored.
    with data_dir_lock(data, shared=True), disk_full_named(run.path, again, EvaluationError):
        return _score(run, record, config, split, load_dataset(data), data_dir is None)


def _score(run: RunDir, record: RunRecord, config: EvaluateConfig, split: str, version: DatasetVersion,
           own_data: bool) -> Evaluation:
    from mmpipe.train.model import HEADS, load_model, with_heads

    if own_data and version.version != record.dataset_version:
        raise EvaluationError(f"{version.data_dir} now holds dataset {version.version}, not "
                              f"{record.dataset_version} that run {record.run_id} trained on; pass --data DIR "
                              "to score it on another dataset")
    changed = version.changed_shards()
    if changed:
        raise EvaluationError(f"shard {changed[0]} of dataset {version.version} is not the file ingest wrote (it "
                              "changed since); re-run `mmpipe ingest`, then evaluate")
    rows = split_rows(version, split)
    if not rows:
        raise EvaluationError(f"dataset {version.version} has no {split!r} rows to evaluate on")
    model_classes = list(record.classes)
    data_classes = list(version.classes)
    unknown = sorted(set(data_classes) - set(model_classes))
    if unknown:
        raise EvaluationError(f"dataset {version.version} has labels the model of run {record.run_id} was not "
                              f"trained on: {', '.join(unknown)}; train a new run on it")
    to_model_index = np.array([model_classes.index(name) for name in data_classes], dtype=np.int64)

    model = load_model(run.model)
    scored_heads = with_heads(model)  # the served prediction and each head's own, in one pass
    size = version.image_size
    image_input = model.input.get("image") if isinstance(model.input, dict) else None
    if image_input is not None and tuple(image_input.shape[1:3]) != (size, size):
        raise EvaluationError(f"run {record.run_id} takes {image_input.shape[1]} px images; dataset "
                              f"{version.version} holds {size} px images")
    batch_size = config.batch_size
    dataset = make_dataset(version, split, batch_size=batch_size, variant=record.variant, with_ids=True)
    ids, labels, outputs = [], [], {}
    started = time.perf_counter()
    for inputs, one_hot, batch_ids in dataset:
        for name, value in scored_heads.predict_on_batch(inputs).items():
            outputs.setdefault(name, []).append(value)
        labels.append(to_model_index[one_hot.numpy().argmax(axis=1)])
        ids.append(batch_ids.numpy())
    seconds = time.perf_counter() - started
    probabilities = np.concatenate(outputs.pop("probabilities")).astype(np.float64)
    # In the blend's order (the model's own head first): Keras hands dict outputs back sorted by name.
    outputs = {name: np.concatenate(outputs[name]).astype(np.float64) for name in HEADS if name in outputs}
    labels, ids = np.concatenate(labels), np.concatenate(ids)
    latency = _single_sample_latency_ms(model, inputs)

    scored = classification_metrics(labels, probabilities, model_classes, top_k=config.top_k,
                                     ece_bins=config.ece_bins)
    scored["heads"] = head_metrics(labels, outputs, model_classes, config)
    if scored["heads"]:  # what the model's own head gave before the blend calibrated it
        first = next(iter(scored["heads"].values()))["metrics"]
        scored["metrics"].update(ece_uncalibrated=first["ece"], log_loss_uncalibrated=first["log_loss"])
    scored["metrics"].update(throughput_samples_per_s=round(len(labels) / seconds, 2), latency_ms=latency)
    row_ids = [value.decode("utf-8") for value in ids]
    scored["slices"] = slice_metrics(version, split, row_ids, labels, probabilities, model_classes,
                                     slice_by=config.slice_by, min_rows=config.min_slice_rows,
                                     ece_bins=config.ece_bins)
    out = evaluation_dir(run, record, version.version, split)
    out.path.mkdir(parents=True, exist_ok=True)
    _write_predictions(out.predictions, row_ids, labels, probabilities, model_classes)
    if out.path == run.path:  # the run's own data, open and checked: its drift reference is kept now
        from mmpipe.config import ScoreConfig
        from mmpipe.score.features import drift_reference

        drift_reference(run, record, model, ScoreConfig().reference_rows, config.slice_by, version)
    result = {
        "run_id": record.run_id, "split": split, "dataset_version": version.version,
        "data_dir": str(version.data_dir), "primary": out.path == run.path, "classes": model_classes,
        **scored, "baselines": baselines(labels, model_classes, record, run.path.parent, config),
        "low_support": low_support_classes(record), "out_dir": str(out.path), "report": str(out.report),
        "seconds": round(seconds, 3),
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": config.model_dump(mode="json"),
    }
    from mmpipe.evaluate.report import write_report

    write_report(out, record, result)
    write_json_atomic(out.metrics, result)
    return Evaluation(run.path, out.path, result)


def head_metrics(labels: np.ndarray, heads: dict[str, np.ndarray], classes: list[str],
                 config: EvaluateConfig) -> dict[str, Any]:
    """Each head's own predictions scored on the same rows (the fused head, and each branch's alone): what
    fusion added, overall and per class, beside what the run serves."""
    found = {}
    for name, probabilities in heads.items():
        scored = classification_metrics(labels, probabilities, classes, top_k=config.top_k, ece_bins=config.ece_bins)
        found[name] = {"metrics": {key: scored["metrics"][key] for key in ("accuracy", "macro_f1", "log_loss", "ece")},
                       "per_class_f1": {name: values["f1"] for name, values in scored["per_class"].items()}}
    return found


def baselines(labels: np.ndarray, classes: list[str], record: RunRecord, runs_dir: Path,
              config: EvaluateConfig) -> dict[str, Any]:
    """What a run must beat on the same rows: always predicting the train split's largest class, and
    (when they exist) the single-modality runs on the same dataset version."""
    train = record.lineage.get("counts", {}).get("train", {})
    majority = max(classes, key=lambda name: (train.get(name, 0), name)) if classes else None
    constant = np.zeros((len(labels), len(classes)))
    if classes:
        constant[:, classes.index(majority)] = 1.0
    scored = classification_metrics(labels, constant, classes, top_k=config.top_k, ece_bins=config.ece_bins)
    found: dict[str, Any] = {"majority": {"class": majority, "accuracy": scored["metrics"]["accuracy"],
                                          "macro_f1": scored["metrics"]["macro_f1"]}}
    if record.variant == "fused":
        from mmpipe.runs.store import list_runs

        # The store's list (newest first) already carries each run's primary accuracy and macro F1.
        for row in list_runs(runs_dir, record.dataset_version):
            if row["variant"] in ("text", "image") and row["variant"] not in found \
                    and row["status"] == "completed" and row["macro_f1"] is not None:
                found[row["variant"]] = {key: row[key] for key in ("run_id", "accuracy", "macro_f1")}
    return found


def low_support_classes(record: RunRecord) -> dict[str, Any]:
    """Classes the run saw fewer than `contracts.min_train_per_class` train rows of (with their train
    rows): their numbers rest on little evidence, and the report says so."""
    minimum = record.run_config.contracts.min_train_per_class
    train = record.lineage["counts"]["train"]
    return {"min_train_rows": minimum,
            "classes": {name: int(train.get(name, 0)) for name in record.classes if train.get(name, 0) < minimum}}


def _single_sample_latency_ms(model, inputs) -> dict[str, float]:
    """Median and 95th percentile of one-row predictions (what an online caller waits)."""
    one = {name: value[:1] for name, value in inputs.items()}
    model.predict_on_batch(one)  # warm up the one-row shape
    times = []
    for _ in range(_LATENCY_SAMPLES):
        started = time.perf_counter()
        model.predict_on_batch(one)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50": round(float(np.percentile(times, 50)), 3), "p95": round(float(np.percentile(times, 95)), 3)}


def _write_predictions(path: Path, ids, labels, probabilities, classes: list[str]) -> None:
    names = np.array(classes, dtype=object)
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "label": pa.array(names[labels], pa.string()),
        "predicted": pa.array(names[probabilities.argmax(axis=1)], pa.string()),
        "probabilities": pa.FixedSizeListArray.from_arrays(
            pa.array(probabilities.astype(np.float32).ravel()), len(classes)),
    })
    table = table.replace_schema_metadata({"classes": json.dumps(classes)})
    with atomic_path(path) as temp:
        pq.write_table(table, temp)
