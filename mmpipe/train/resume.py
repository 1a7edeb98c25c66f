"""Continuing a run after a kill: which runs can continue and from which epoch, one trainer at a time.

A run resumes from its last whole checkpoint (mmpipe.train.checkpoints), with its own config, on the
dataset version it started on. The chief holds the run's training lock while it trains, so a second
`--resume` of the same run is refused instead of writing beside the first; each other worker of a
multi-worker run trains from a copy of the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mmpipe.errors import RunStoreError, TrainingError
from mmpipe.files import hold_lock
from mmpipe.ingest.version import DatasetVersion
from mmpipe.runs.record import RunDir, RunRecord, load_record, status_of
from mmpipe.train.checkpoints import Checkpoint, last_checkpoint
from mmpipe.train.distribute import Distribution, worker_copy


@contextlib.contextmanager
def training_lock(run: RunDir) -> Iterator[None]:
    """One trainer per run. Two `--resume` of one run at the same moment both find it interrupted before either
    marks it running: the second to come is refused here, not left to write the same run beside the first."""
    path = run.training_lock
    try:
        with hold_lock(path, wait=False):
            path.write_text(f"pid {os.getpid()} on {socket.gethostname()}")
            yield
    except BlockingIOError:
        holder = path.read_text().strip() or "another process"
        raise TrainingError(f"run {run.run_id} is being trained ({holder}); wait for it to finish, or stop that "
                            "process first") from None


def resumable_run(runs_dir: Path, run_id: str, version: DatasetVersion
                  ) -> tuple[RunDir, RunRecord, Checkpoint, list[str]]:
    """(run dir, its record, the checkpoint to continue from, notes on skipped broken ones) of a run
    that can be continued; else TrainingError saying why."""
    run = RunDir(Path(runs_dir) / run_id)
    try:
        record = load_record(run)
    except RunStoreError as error:
        raise TrainingError(str(error)) from None
    if record.status in ("completed", "pruned"):
        raise TrainingError(f"run {run_id} already {record.status}; runs are never edited after they finish")
    if status_of(record) == "running":
        raise TrainingError(f"run {run_id} is still being trained (pid {record.pid} on {record.host}); wait for it, "
                            "or stop that process first")
    if record.dataset_version != version.version:
        raise TrainingError(f"run {run_id} trained on dataset {record.dataset_version}, "
                            f"but {version.data_dir} now holds {version.version}")
    checkpoint, skipped = last_checkpoint(run)
    if checkpoint is None:
        broken = f" ({'; '.join(skipped)})" if skipped else ""
        raise TrainingError(f"run {run_id} has no completed epoch to resume from{broken}; start a new run")
    return run, record, checkpoint, skipped


def copy_to_resume(run: RunDir, checkpoint: Checkpoint,
                    distribution: Distribution) -> tuple[RunDir | None, str | None]:
    """A worker's copy of the epoch to resume from, or why it could not make one (said before any worker starts)."""
    try:
        copy = worker_copy(run, distribution)
    except OSError as error:
        return None, f"worker {distribution.worker} cannot copy run {run.run_id} to resume it: {error}"
    copied, _ = last_checkpoint(copy)
    if copied is None or copied.epoch != checkpoint.epoch:
        return None, f"worker {distribution.worker} could not copy epoch {checkpoint.epoch} of run {run.run_id}"
    return copy, None
