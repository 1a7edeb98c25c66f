"""Ingest: raw sources in, cleaned and standardized Parquet shards, a quarantine and dataset.json out.

sources (read manifests and folder trees) -> chunks (content-defined, cached units of work) ->
clean/ (one row: text, label, image) -> split -> version (dedupe, write shards via shards.py in
the schemas of schema.py, and the typed dataset.json). runner.py drives it; watch.py notices new
data in a source.
"""

from mmpipe.ingest.runner import IngestPlan, finish_ingest, ingest, plan_ingest
from mmpipe.ingest.version import DatasetVersion, load_dataset

__all__ = ["DatasetVersion", "IngestPlan", "finish_ingest", "ingest", "load_dataset", "plan_ingest"]
