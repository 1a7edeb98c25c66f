"""Tracking: runs mirrored to MLflow, where people compare them. The run store stays the record.

mirror.py logs one run from what its run dir holds (idempotent: a run is one MLflow run, each part
logged once); names.py says what things are called on the server (experiment, params, metric names);
model.py is the MLflow model a run's serving export is registered as.
"""

from mmpipe.tracking.mirror import Mirrored, mirror_run, sync_runs

__all__ = ["Mirrored", "mirror_run", "sync_runs"]
