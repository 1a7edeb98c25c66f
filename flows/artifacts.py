"""Artifact keys, defined once (Prefect allows lowercase letters, digits and dashes), each made one per source by
`artifact_key`."""

from __future__ import annotations

import re
from pathlib import Path

from mmpipe.ingest.version import recorded_source
from mmpipe.ingest.watch import source_key
from mmpipe.storage.urls import absolute, source_label

INGEST_SUMMARY = "ingest-summary"
INGEST_COUNTS = "ingest-counts"
INGEST_REJECTS = "ingest-rejects"
VALIDATION_REPORT = "validation-report"
VALIDATION_PAGE = "validation-page"  # a link to the validation page
EVALUATION_REPORT = "evaluation-report"
EVALUATION_METRICS = "evaluation-metrics"
EVALUATION_REPORT_FILE = "evaluation-report-file"  # a link to report.html
CONFUSION_MATRIX = "confusion-matrix"
RELIABILITY_DIAGRAM = "reliability-diagram"
TRAINING_CURVES = "training-curves"
PROMOTION_DECISION = "promotion-decision"
PIPELINE_SUMMARY = "pipeline-summary"
TRACKED_RUN = "tracked-run"  # a link to the run's page on the MLflow server
SCORING_SUMMARY = "scoring-summary"
DRIFT_FEATURES = "drift-features"  # a table: each feature's test, statistic, threshold, verdict
DRIFT_CHART = "drift-chart"  # the training data beside the scored rows, feature by feature
TUNING_STUDY = "tuning-study"  # what a search found: its best run, settings and test decision
TUNING_TRIALS = "tuning-trials"  # a table: every trial's state, value, epochs, run and settings
TUNING_CHART = "tuning-chart"  # + the chart's name: history, epochs, importance


def artifact_key(name: str, data_dir: str | Path) -> str:
    """`name` for the source whose data dir this is, e.g. `evaluation-metrics-demo-3fa2c1d0`.

    Prefect keeps one history per key, so a key shared by two sources would mix their runs. The readable part
    is the source's name; the hash of where it is tells two folders of one name apart (and names a data dir
    whose dataset does not say its source by the data dir itself)."""
    return source_artifact_key(name, recorded_source(data_dir) or str(absolute(data_dir)))


def source_artifact_key(name: str, source: str | Path) -> str:
    """`name` for a source itself (the data being scored has no data dir of its own)."""
    readable = re.sub(r"[^a-z0-9]+", "-", source_label(source).lower())[:32].strip("-")
    return "-".join(part for part in (name, readable, source_key(source)[:8]) if part)
