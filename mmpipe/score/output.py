"""A finished scoring on disk: OUT/<version>/ with predictions.parquet, quarantine.parquet, report.html and
scoring.json (written last: when it exists, the scoring is complete).

The folder is built under a temporary name and renamed into place whole, so a reader sees the scoring or
nothing; a scoring found complete is reused only after its files are checked against the hashes it recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmpipe.config import Config
from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.files import sha256_file, write_json_atomic
from mmpipe.ingest.chunks import prune_cache
from mmpipe.ingest.schema import QUARANTINE_SCHEMA, quarantine_rows
from mmpipe.runs.record import RunDir
from mmpipe.score.drift import judge_drift, judge_slices
from mmpipe.score.features import CATEGORICAL, NUMERIC, drift_reference, slice_values
from mmpipe.score.runner import ScoredChunk, ScorePlan, model_of

SCORING_FILE = "scoring.json"
PREDICTIONS_FILE = RunDir.PREDICTIONS  # the names an evaluation's files have, for the same kind of file
QUARANTINE_FILE = "quarantine.parquet"
REPORT_FILE = RunDir.REPORT
FORMAT_VERSION = 1


def finish_scoring(plan: ScorePlan, results: list[ScoredChunk], config: Config, process_s: float) -> dict[str, Any]:
    """Write OUT/<version>/ from the scored chunks (or return the same scoring found complete)."""
    kept = complete_scoring(plan.out_dir)
    if kept is not None:
        return {**kept, "reused": True}
    started = time.perf_counter()
    _remove_left_behind(plan.out_root)
    temp = plan.out_root / f".{plan.version}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    classes = list(plan.record.classes)
    extras = _extra_names(results)
    scored, labelled, probabilities = _write_predictions(temp / PREDICTIONS_FILE, results, plan, classes, extras)
    quarantined = _write_quarantine(temp / QUARANTINE_FILE, results)
    current, slices = _current_features(results, config.evaluate.slice_by)
    reference = drift_reference(RunDir(plan.run_dir), plan.record, model_of(plan.run_dir), config.score.reference_rows,
                                config.evaluate.slice_by)
    drift = judge_drift(reference, current, config.score)
    if slices and "missing" not in reference:
        drift["slices"] = judge_slices(reference, current, slices, config.score)
        drifted = [f"{name} = {value}" for name, values in drift["slices"].items()
                   for value, verdict in values.items() if verdict["detected"]]
        drift["detected"] = drift["detected"] or bool(drifted)
        judged = sum(len(values) for values in drift["slices"].values())
        drift["note"] += (f"; slices drifted: {', '.join(drifted)}" if drifted else
                          f"; no slice drifted ({judged} judged)")
    metrics = None
    if labelled[0].size:
        found = classification_metrics(labelled[0], probabilities, classes, ece_bins=config.evaluate.ece_bins)
        metrics = {**found["metrics"], "per_class": found["per_class"], "rows": int(labelled[0].size)}
    rows_read = sum(result.rows for result in results)
    result = {
        "format": FORMAT_VERSION, "version": plan.version, "run_id": plan.record.run_id,
        "source": plan.source.describe(), "rows_read": rows_read, "scored": scored, "quarantined": quarantined,
        "unlabelled": scored - int(labelled[0].size) - labelled[1], "unknown_labels": labelled[1],
        "metrics": metrics, "drift": drift, "classes": classes, "out_dir": str(plan.out_dir),
        "predictions": [str(plan.out_dir / PREDICTIONS_FILE)], "report": str(plan.out_dir / REPORT_FILE),
        "lineage": {"run_id": plan.record.run_id, "run_dataset_version": plan.record.dataset_version,
                    "run_config_hash": plan.record.config_hash, "chunks": [chunk.key for chunk in plan.chunks],
                    "settings": config.score.model_dump(mode="json")},
        "timings": {"plan_s": plan.plan_s, "process_s": round(process_s, 3)},
        "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if rows_read != scored + sum(quarantined.values()):  # every row read is scored or quarantined, never lost
        raise AssertionError(f"scoring lost rows: {rows_read} read, {scored} scored, {quarantined} quarantined")
    from mmpipe.score.report import write_report

    written = write_report(temp, REPORT_FILE, result, reference, current)
    result["files"] = {name: sha256_file(temp / name) for name in (PREDICTIONS_FILE, QUARANTINE_FILE, *written)}
    result["timings"]["finish_s"] = round(time.perf_counter() - started, 3)
    write_json_atomic(temp / SCORING_FILE, result)
    try:
        os.rename(temp, plan.out_dir)
    except OSError:  # the same scoring finished meanwhile by another command: theirs stands
        shutil.rmtree(temp, ignore_errors=True)
        kept = complete_scoring(plan.out_dir)
        if kept is None:
            raise
        return {**kept, "reused": True}
    prune_cache(plan.cache_dir, plan.chunks)
    for stale in (plan.cache_dir / "scored").glob("*.parquet"):
        if stale.name.split("-")[0] not in {chunk.key for chunk in plan.chunks}:
            stale.unlink(missing_ok=True)
    return {**result, "reused": False}


def _remove_left_behind(out_root: Path) -> None:
    """Folders of scorings killed before their rename (`.VERSION.tmp-PID` of a process that is gone)."""
    for folder in out_root.glob(".*.tmp-*"):
        try:
            os.kill(int(folder.name.rsplit("-", 1)[1]), 0)
        except ValueError:
            continue  # not one of ours
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            continue  # a live process of another user


def complete_scoring(out_dir: Path) -> dict[str, Any] | None:
    """The scoring in `out_dir` when it is complete and its files are the ones it wrote; else None."""
    try:
        result = json.loads((out_dir / SCORING_FILE).read_text())
        files = result["files"]
        if result.get("format") != FORMAT_VERSION or any(sha256_file(out_dir / name) != digest
                                                          for name, digest in files.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result


def _extra_names(results: list[ScoredChunk]) -> list[str]:
    """The source's other columns, across every chunk (one schema for the whole file)."""
    names: set[str] = set()
    for result in results:
        for text in pq.read_table(result.path, columns=["extra"])["extra"].to_pylist():
            if text:
                names.update(json.loads(text))
    return sorted(names)


def _write_predictions(path: Path, results: list[ScoredChunk], plan: ScorePlan, classes: list[str],
                       extras: list[str]) -> tuple[int, tuple[np.ndarray, int], np.ndarray]:
    """Stream every chunk's scored rows into one file; (rows, (labelled rows' class index, unknown labels),
    their probabilities) for the metrics."""
    index = {name: position for position, name in enumerate(classes)}
    fields = [pa.field("id", pa.string()), pa.field("predicted", pa.string()), pa.field("confidence", pa.float32()),
              *(pa.field(f"probability_{name}", pa.float32()) for name in classes),
              pa.field("label", pa.string()), pa.field("run_id", pa.string())]
    ours = {field.name for field in fields}
    extras = [name for name in extras if name not in ours]  # a source column named like one of ours: ours stands
    schema = pa.schema([*fields, *(pa.field(name, pa.string()) for name in extras)],
                       metadata={"classes": json.dumps(classes), "run_id": plan.record.run_id})
    rows, known, unknown, scores = 0, [], 0, []
    with pq.ParquetWriter(path, schema) as writer:
        for result in results:
            table = pq.read_table(result.path)
            probabilities = table["probabilities"].combine_chunks().flatten().to_numpy(
                zero_copy_only=False).reshape(-1, len(classes))
            given = [json.loads(text) if text else {} for text in table["extra"].to_pylist()]
            columns = {"id": table["id"], "predicted": table["predicted"], "confidence": table["confidence"],
                       **{f"probability_{name}": pa.array(probabilities[:, i]) for i, name in enumerate(classes)},
                       "label": table["label"], "run_id": pa.array([plan.record.run_id] * table.num_rows, pa.string()),
                       **{name: pa.array([None if row.get(name) is None else str(row[name]) for row in given],
                                         pa.string()) for name in schema.names if name in extras}}
            writer.write_table(pa.table(columns, schema=schema))
            labels = table["label"].to_pylist()
            for position, label in enumerate(labels):
                if label is None:
                    continue
                if label in index:
                    known.append(index[label])
                    scores.append(probabilities[position])
                else:
                    unknown += 1
            rows += table.num_rows
    probabilities = np.array(scores, dtype=np.float64).reshape(-1, len(classes))
    return rows, (np.array(known, dtype=np.int64), unknown), probabilities


def _write_quarantine(path: Path, results: list[ScoredChunk]) -> dict[str, int]:
    """The rows not scored, with their raw values, where they came from and why; {reason: rows}."""
    tables = []
    for result in results:
        cleaned = pq.read_table(result.cleaned)
        rejected = pc.is_valid(cleaned["reason"])
        locators = pq.read_table(result.raw, columns=["row", "source"]).filter(rejected)
        tables.append(quarantine_rows(cleaned.filter(rejected), locators))
    table = pa.concat_tables(tables) if tables else QUARANTINE_SCHEMA.empty_table()
    pq.write_table(table, path)
    counts: dict[str, int] = {}
    for reason in table["reason"].to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def _current_features(results: list[ScoredChunk], slice_by: list[str]) -> tuple[dict[str, np.ndarray],
                                                                                dict[str, np.ndarray]]:
    """The scored rows' drift features and predicted classes, and their `slice_by` values, all chunks together."""
    columns = [*NUMERIC, *CATEGORICAL]
    parts: dict[str, list] = {name: [] for name in columns}
    sliced: dict[str, list] = {name: [] for name in slice_by}
    for result in results:
        table = pq.read_table(result.path)
        for name in columns:
            if name in table.column_names:
                parts[name].append(table[name].to_numpy(zero_copy_only=False))
        for name, values in slice_values(table, slice_by).items():
            sliced[name].extend(values)
    features = {name: np.concatenate(values) for name, values in parts.items() if values}
    return features, {name: np.array(values, dtype=object) for name, values in sliced.items()}
