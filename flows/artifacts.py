"""Artifact keys, defined once (Prefect allows lowercase letters, digits and dashes)."""

INGEST_SUMMARY = "ingest-summary"
INGEST_COUNTS = "ingest-counts"
INGEST_REJECTS = "ingest-rejects"
VALIDATION_REPORT = "validation-report"
