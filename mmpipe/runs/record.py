"""A run dir, RUNS/<run_id>/: every file name in it, and run.json, the typed record of the run.

Every stage that writes or reads a run asks `RunDir` for a path (train writes the record, the
model, checkpoints, logs and the serving export; evaluate writes metrics, predictions and the
report; promote writes the decision), so each name has one owner: this module. run.json is
versioned (`format`); older formats are read and migrated here.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mmpipe.config import Config
from mmpipe.errors import RunStoreError
from mmpipe.files import process_alive, read_record, write_json_atomic

RUN_FORMAT = 1
Status = Literal["running", "completed", "failed", "pruned"]  # pruned: ended early by its study
# Never written: what a "running" record means when the process that wrote it is gone.
INTERRUPTED = "interrupted"


class RunDir:
    """The layout of one run dir. Paths only: reading and writing is the caller's (through its owner)."""

    RECORD = "run.json"
    METRICS = "metrics.json"  # written last by an evaluation: when it exists, the evaluation is complete
    PROMOTION = "promotion.json"
    MODEL = "model.keras"
    PREDICTIONS = "predictions.parquet"
    REPORT = "report.html"
    CONFUSION_MATRIX = "confusion_matrix.png"
    HISTORY = "history.csv"
    LOGS = "logs"
    CHECKPOINTS = "checkpoints"
    SERVING = "serving"
    EVALUATIONS = "evaluations"
    TRAINING_LOCK = ".training.lock"  # held by the process training the run (see mmpipe.train.resume.training_lock)

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def record(self) -> Path:
        return self.path / self.RECORD

    @property
    def training_lock(self) -> Path:
        return self.path / self.TRAINING_LOCK

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def promotion(self) -> Path:
        return self.path / self.PROMOTION

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def confusion_matrix(self) -> Path:
        return self.path / self.CONFUSION_MATRIX

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def logs(self) -> Path:
        return self.path / self.LOGS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def serving(self) -> Path:
        return self.path / self.SERVING

    def checkpoint(self, epoch: int) -> Path:
        return self.path / self.CHECKPOINTS / f"epoch-{epoch:03d}.keras"

    def evaluation(self, dataset_version: str, split: str) -> Path:
        """Where an evaluation on another dataset version or split lives (the primary one is the run dir)."""
        return self.path / self.EVALUATIONS / f"{dataset_version}-{split}"


class RunRecord(BaseModel):
    """run.json: everything needed to reproduce a run, and how far it got."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    format: int = RUN_FORMAT
    run_id: str
    status: Status = "running"
    variant: str
    seed: int
    dataset_version: str
    data_dir: str
    classes: list[str]
    config: dict[str, Any]
    config_hash: str
    code_version: str
    git_commit: str | None = None
    packages: dict[str, str] = {}
    started_at: str
    lineage: dict[str, Any] = {}
    class_weights: dict[str, float] | None = None  # what each class's rows weighed in the loss (None: 1)
    distribution: dict[str, Any] | None = None  # strategy, replicas, workers, batch per replica and global
    history: list[dict[str, float]] = []
    best_epoch: int | None = None  # the epoch whose weights the run kept (early stopping's best), from 1
    monitor: str | None = None  # what early stopping judged the epochs by (val_macro_f1, val_loss, loss)
    blend: dict[str, Any] | None = None  # the heads' blend fitted on validation (mmpipe.train.monitor.blend_record)
    machine: dict[str, Any] | None = None  # CPU, its instruction-set flags and the thread settings it trained with
    finished_at: str | None = None
    seconds: float | None = None
    error: str | None = None
    resumed_from_epoch: int | None = None
    pid: int | None = None  # of the process training it, on `host`: a dead one means interrupted
    host: str | None = None
    study: dict[str, Any] | None = None  # the tuning study this run is a trial of: name, trial, params
    notes: list[str] = []  # what happened that a reader should know (resumed, a broken checkpoint skipped)

    @property
    def run_config(self) -> Config:
        """The run's config, typed."""
        return Config.model_validate(self.config)

    def save(self, run: RunDir) -> None:
        write_json_atomic(run.record, self.model_dump(mode="json"))


def status_of(record: RunRecord) -> str:
    """The record's status, except that a run whose trainer died on this host (kill -9, power loss) is
    `interrupted` (resume it with `mmpipe train --resume`), not `running` forever."""
    if record.status == "running" and record.pid and record.host == socket.gethostname() \
            and not process_alive(record.pid):
        return INTERRUPTED
    return record.status


def load_record(run: RunDir) -> RunRecord:
    """Read run.json. Raises RunStoreError naming the file when it is missing or unreadable."""
    return read_record(run.record, RunRecord, RUN_FORMAT, RunStoreError,
                       missing=f"no run {run.run_id} in {run.path.parent}; `mmpipe runs list --runs "
                               f"{run.path.parent}` shows the runs", fix="the run is damaged")
