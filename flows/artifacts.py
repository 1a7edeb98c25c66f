"""Artifact keys, defined once (Prefect allows lowercase letters, digits and dashes)."""

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
