"""Training runs: RUNS/<run_id>/ with run.json, model.keras, per-epoch checkpoints, logs.

A run is reproducible: the seed fixes weights and shuffling, TF op determinism is on, and each
epoch's shuffle order depends only on (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one. A dataset version must have passed its data contracts first.

A run trains under the strategy `[train] strategy` picks (distribute.py): `batch_size` rows per
replica and step, one input pipeline per worker reading its own share of the shards, the same
number of steps on every worker (a share that runs out starts over), and the chief alone writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mmpipe
from mmpipe.config import Config
from mmpipe.contracts.validate import RESULT_FILE, read_reference, set_reference, validation_dir
from mmpipe.errors import DataDirError, TrainingError
from mmpipe.files import atomic_path, disk_full_named, remove_stale_temporaries
from mmpipe.ingest.version import DatasetVersion, data_dir_lock, load_dataset
from mmpipe.runs.record import RunDir, RunRecord
from mmpipe.train.checkpoints import Checkpoint, keras_callbacks, last_checkpoint
from mmpipe.train.distribute import (
    Distribution,
    check_same_distribution,
    decode_text,
    disagreement,
    distribution_for,
    encode_text,
    lost_worker,
    worker_copy,
)
from mmpipe.train.inputs import epoch_steps, plan_shares, split_rows, train_texts, training_input, validation_input
from mmpipe.train.keras_fixes import keras_workarounds
from mmpipe.train.provenance import git_commit, machine, package_versions
from mmpipe.train.resume import copy_to_resume, resumable_run, training_lock
from mmpipe.wording import counted


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    run_dir: Path
    history: dict[str, list[float]]
    status: str
    notes: list[str] = field(default_factory=list)
    distribution: dict[str, Any] = field(default_factory=dict)  # as run.json records it
    chief: bool = True  # this process wrote the run (every process but the other workers of a multi-worker run)

    def summary(self) -> dict[str, Any]:
        """The object `mmpipe train --json` prints."""
        return {"run_id": self.run_id, "run_dir": str(self.run_dir), "history": self.history, "status": self.status,
                "notes": self.notes, "distribution": self.distribution}


class RunPruned(Exception):
    """Raised by a callback to end a run that is not worth finishing (a search's pruner): the run is `pruned`."""

    run_id: str | None = None  # the run it ended, set on the way out


def new_run_id() -> str:
    """Sortable by start time (UTC, to the second), unique by a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def require_validated(version: DatasetVersion) -> None:
    """Raise unless this dataset version passed its critical expectations and its shards are still
    the files that passed (a stored "passed" is a claim about files, checked before it is used).

    Raises:
        TrainingError: not validated, failed, or a shard changed since ingest (named).
        DataDirError: a shard the version lists is missing (named).
    """
    path = validation_dir(version.data_dir, version.version) / RESULT_FILE
    try:
        passed = json.loads(path.read_text())["success"]
    except (FileNotFoundError, ValueError, KeyError):
        raise TrainingError(
            f"dataset {version.version} has not been validated: run `mmpipe validate --data {version.data_dir}`"
        ) from None
    if not passed:
        raise TrainingError(f"dataset {version.version} failed its data contracts ({path}); fix the data first")
    changed = version.changed_shards()
    if changed:
        raise TrainingError(f"shard {changed[0]} is not the file ingest wrote (it changed since; "
                            f"{counted(len(changed), 'shard')} in all): re-run `mmpipe ingest` to rebuild the dataset, "
                            "then validate it")


def train(config: Config, *, resume: str | None = None, callbacks: list | None = None,
          study: dict[str, Any] | None = None) -> TrainResult:
    """Train `config.model.variant` on the dataset in `config.data_dir`; write RUNS/<run_id>/.

    Args:
        resume: a run id to continue from its last completed epoch, with that run's config.
        callbacks: extra Keras callbacks (progress reporting, a pruner raising RunPruned), run after the run's own.
        study: the search this run is a trial of ({"name", "trial", "params"}), recorded in run.json.

    Raises:
        TrainingError: the dataset did not pass validation, or `resume` names no resumable run.
    """
    with data_dir_lock(config.data_dir, shared=True):  # the version cannot be replaced while it is read
        version = load_dataset(config.data_dir)
        require_validated(version)
        with disk_full_named(config.runs_dir, "resume the run from its last whole epoch (`mmpipe runs list` names it, "
                             "`mmpipe train --resume RUN_ID`)", TrainingError):
            result = _train(config, version, resume, callbacks or [], study)
    # Drift is measured against what was trained on. Set once per version: the exclusive lock waits for every
    # other run training on the data dir (a search's parallel trials), so it is not taken when there is no need.
    if result.chief and not _is_reference(version):
        with data_dir_lock(version.data_dir):
            set_reference(version.data_dir, version.version)
    return result


def _is_reference(version: DatasetVersion) -> bool:
    try:
        return (read_reference(version.data_dir) or {}).get("dataset_version") == version.version
    except DataDirError:  # damaged: written again
        return False


def _train(config: Config, version: DatasetVersion, resume: str | None, callbacks: list,
           study: dict[str, Any] | None) -> TrainResult:
    runs_dir = Path(config.runs_dir).absolute()
    checkpoint, skipped, problem = None, [], None
    if resume:
        try:
            run, record, checkpoint, skipped = resumable_run(runs_dir, resume, version)
            config = record.run_config  # the run's own settings, its strategy included
        except TrainingError as error:
            problem = str(error)
    distribution = distribution_for(config.train)  # first: TensorFlow's runtime must not have started yet
    problem = problem or disagreement(distribution, checkpoint)
    trainer = contextlib.ExitStack()  # the resumed run's training lock, held by its chief until training ends
    if checkpoint and not problem and distribution.chief:
        try:
            trainer.enter_context(training_lock(run))
            _, record, checkpoint, skipped = resumable_run(runs_dir, resume, version)  # again: nobody else can now
            remove_stale_temporaries(run.path)  # what the killed trainer was writing: never whole, never read
        except TrainingError as error:
            problem = str(error)
    written = None
    if checkpoint and not problem and not distribution.chief:
        written, problem = copy_to_resume(run, checkpoint, distribution)
    with trainer:
        distribution.all_ready(problem)  # every worker has read the run store before the chief writes to it
        if checkpoint:
            check_same_distribution(record, distribution)
            record.status, record.error, record.resumed_from_epoch = "running", None, checkpoint.epoch
            record.pid, record.host = os.getpid(), socket.gethostname()
            record.history = [epoch for epoch in record.history if epoch["epoch"] <= checkpoint.epoch]
            record.notes = [*record.notes, f"resumed from epoch {checkpoint.epoch}", *skipped]
        else:
            run = RunDir(runs_dir / decode_text(distribution.from_chief(encode_text(new_run_id()))))
            record = _new_record(run.run_id, config, version, study)
        if distribution.chief:
            written = run
        elif written is None:
            written = worker_copy(run, distribution)
        else:
            checkpoint, _ = last_checkpoint(written)  # the copy of the epoch every worker agreed on
        try:
            return _fit(config, version, distribution, run, written, record, checkpoint, callbacks)
        finally:
            if written is not run:
                shutil.rmtree(written.path.parent, ignore_errors=True)


def _fit(config: Config, version: DatasetVersion, distribution: Distribution, run: RunDir, written: RunDir,
         record: RunRecord, checkpoint: Checkpoint | None, callbacks: list) -> TrainResult:
    """Fit and save; `written` is where this process writes (`run` on the chief, a copy on the others)."""
    import keras
    import tensorflow as tf

    from mmpipe.train.model import build_model, heads_of, load_model
    from mmpipe.train.monitor import validation_callback

    initial_epoch = checkpoint.epoch if checkpoint else 0
    # Keras keeps a process-wide seed generator that earlier models advance; clearing the session
    # makes what is random in training (shuffles aside: those are seeded per epoch) a function of the seed.
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    classes = list(version.classes)
    shares = plan_shares(version, "train", distribution.workers)  # one input pipeline per worker
    steps = epoch_steps(shares, distribution)
    record.distribution = distribution.describe(shares.sharding)
    record.save(written)
    try:
        vectorizers = {} if checkpoint else vectorizers_for(config, version)
        with distribution.strategy.scope():
            if checkpoint:
                model = load_model(checkpoint.model)
                checkpoint.restore_random_state(model)
            else:
                model = build_model(config.model, len(classes), version.image_size, vectorizers, seed=config.seed,
                                    steps_per_epoch=steps, epochs=config.train.epochs,
                                    synchronized_batch_norm=distribution.synchronized_batch_norm)
        written.checkpoints.mkdir(parents=True, exist_ok=True)
        has_val = split_rows(version, "val") > 0
        monitor = record.monitor = _early_stopping_monitor(config, has_val)
        warmup = 0 if config.model.preset != "default" else config.train.early_stopping_warmup
        saved = checkpoint.state.get("validation") if checkpoint else None
        validation = validation_callback(validation_input(config, version), classes, saved) if has_val else None
        own = keras_callbacks(written, monitor, "min" if monitor.endswith("loss") else "max",
                              config.train.early_stopping_patience, warmup, checkpoint,
                              _epoch_recorder(written, record), validation)
        remaining = range(initial_epoch, config.train.epochs) if not (checkpoint and checkpoint.stopped) else []
        if remaining:
            with warnings.catch_warnings(), keras_workarounds(model, distribution):
                # Both are benign here and alarm users: the validation set (a generator of unknown length)
                # "runs out of data" the first time it ends, and fit's shuffle flag does not apply to
                # tf.data (we shuffle in the pipeline).
                warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
                warnings.filterwarnings("ignore", message="`shuffle=True` was passed", category=UserWarning)
                weights = [record.class_weights.get(name, 0.0) for name in classes] if record.class_weights else None
                model.fit(
                    training_input(config, version, distribution, shares, remaining, steps, heads_of(model),
                                   weights),
                    epochs=config.train.epochs, initial_epoch=initial_epoch, verbose=0, steps_per_epoch=steps,
                    # TensorBoard's event files are append-only logs: a resume adds a file, never edits one.
                    callbacks=[*own, keras.callbacks.TensorBoard(str(written.logs)), *callbacks],
                )
        elif checkpoint and (best := checkpoint.best_weights(written)) is not None:
            model.set_weights(best)  # stopped early before the interruption
        record.best_epoch = _best_epoch(own, record)
        with distribution.strategy.scope():
            served = _blend_on_validation(model, config, version, record, validation.call if validation else None)
        with atomic_path(written.model, suffix=".keras") as temp:  # Keras wants the .keras suffix
            served.save(temp)
        if config.train.export_serving and distribution.chief:
            # The same single-device SavedModel whatever the strategy: a distributed model is reloaded first.
            _export(served if distribution.name == "one_device" else load_model(run.model), run, version)
    except BaseException as error:
        if isinstance(error, RunPruned):  # ended by its search: finished, not broken
            record.status, record.error, error.run_id = "pruned", str(error), run.run_id
            record.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        else:
            record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        record.save(written)
        if distribution.workers > 1 and isinstance(error, tf.errors.UnavailableError):
            raise TrainingError(lost_worker(error, run.run_id)) from None
        raise
    record.status, record.seconds = "completed", round(time.perf_counter() - started, 3)
    record.finished_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record.save(written)
    # run.json's per-epoch record also covers the epochs before a resume.
    metrics = sorted({key for epoch in record.history for key in epoch if key != "epoch"})
    merged = {key: [epoch.get(key) for epoch in record.history] for key in metrics}
    return TrainResult(run.run_id, run.path, merged, "completed", record.notes, record.distribution or {},
                       distribution.chief)


def _best_epoch(callbacks: list, record: RunRecord) -> int | None:
    """The epoch whose weights the run keeps (early stopping's best), counted from 1; None without early stopping."""
    import keras

    stopping = next(callback for callback in callbacks if isinstance(callback, keras.callbacks.EarlyStopping))
    if stopping.best_weights is not None:
        return stopping.best_epoch + 1
    return record.best_epoch if record.best_epoch is not None else (len(record.history) or None)


def _blend_on_validation(model, config: Config, version: DatasetVersion, record: RunRecord, call=None):
    """The model the run serves: its heads blended with weights fitted on the validation split (calibration
    and late fusion, mmpipe.train.calibrate), recorded in run.json with a note on each branch that carried no
    signal; without validation rows, the first head alone and a note saying it is not calibrated."""
    from mmpipe.train.model import heads_of, serving_model
    from mmpipe.train.monitor import blend_record, score_heads, silent_branches

    classes = list(version.classes)
    ece_bins = config.evaluate.ece_bins
    if split_rows(version, "val"):
        scored = score_heads(model, validation_input(config, version), classes, call)
        weights = scored.fit()
        record.blend = blend_record(scored, weights, classes, ece_bins)
        train = version.counts["train"]
        majority = max(classes, key=lambda name: (train.get(name, 0), name))
        record.notes = [*record.notes, *silent_branches(scored, weights, classes, majority)]
    else:
        from mmpipe.train.calibrate import prior_weights

        weights = prior_weights(len(heads_of(model)))
        record.blend = {"heads": heads_of(model), "weights": weights.tolist(), "fitted_on": None}
        record.notes = [*record.notes, "no validation split: the probabilities are the model's own head's, "
                                       "not calibrated"]
    return serving_model(model, weights)


def _new_record(run_id: str, config: Config, version: DatasetVersion, study: dict[str, Any] | None) -> RunRecord:
    """run.json at the start: everything needed to reproduce the run."""
    return RunRecord(
        run_id=run_id, variant=config.model.variant, seed=config.seed, dataset_version=version.version,
        data_dir=str(Path(version.data_dir).absolute()), classes=list(version.classes),
        config=config.model_dump(mode="json"), config_hash=config.hash(), code_version=mmpipe.__version__,
        git_commit=git_commit(), packages=package_versions(), machine=machine(),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), lineage=_lineage(version),
        pid=os.getpid(), host=socket.gethostname(),
        class_weights=class_weights(config, version.counts["train"], list(version.classes)), study=study,
    )


def _lineage(version: DatasetVersion) -> dict[str, Any]:
    """What the run depends on, copied in: the data dir may hold another version tomorrow."""
    result_path = validation_dir(version.data_dir, version.version) / RESULT_FILE
    result = json.loads(result_path.read_text())
    return {
        "dataset_version": version.version, "ingest_config_hash": version.config_hash,
        "counts": version.counts, "shards": [shard.model_dump() for shard in version.shards],
        "validation": {"success": result["success"], "result": str(result_path),
                       "contracts": result.get("contracts")},
    }


def _export(model, run: RunDir, version: DatasetVersion) -> None:
    """The serving export, cleaning with the settings the dataset was ingested with (not today's config)."""
    from mmpipe.serving.export import export_serving

    export_serving(model, run.path, list(version.classes), version.text_config, version.image_config)


def vectorizers_for(config: Config, version: DatasetVersion) -> dict:
    """The text vectorizers, adapted on the train split (none for the image variant)."""
    if config.model.variant == "image":
        return {}
    from mmpipe.train.model import adapt_vectorizers

    return adapt_vectorizers(config.model, train_texts(version))


def _early_stopping_monitor(config: Config, has_val: bool) -> str:
    """What early stopping watches: the configured validation metric (the seed preset: val loss), or the
    training loss when there is no validation split."""
    if not has_val:
        return "loss"
    return "val_loss" if config.model.preset != "default" else config.train.early_stopping_monitor


# With class_weights = "auto", classes are weighted once the largest has this many times the rows of the smallest.
AUTO_WEIGHT_RATIO = 3.0
# No class weighs more than this many times the largest one: a class of 1-3 rows (a typo in a label,
# say) must not dominate the loss, which plain inverse-frequency weights make it do.
MAX_CLASS_WEIGHT = 4.0


def class_weights(config: Config, counts: dict[str, int], classes: list[str]) -> dict[str, float] | None:
    """Weights that lift small classes: sqrt(largest / rows), at most MAX_CLASS_WEIGHT, scaled so the
    average row weighs 1; when asked for, or when skewed and "auto"."""
    present = {name: counts[name] for name in classes if counts.get(name)}
    setting = "none" if config.model.preset != "default" else config.train.class_weights
    skewed = bool(present) and max(present.values()) >= AUTO_WEIGHT_RATIO * min(present.values())
    if setting == "none" or (setting == "auto" and not skewed):
        return None
    largest = max(present.values())
    raw = {name: min(MAX_CLASS_WEIGHT, (largest / rows) ** 0.5) for name, rows in present.items()}
    scale = sum(present.values()) / sum(rows * raw[name] for name, rows in present.items())
    return {name: round(raw[name] * scale, 6) if name in raw else 0.0 for name in classes}


def _epoch_recorder(run: RunDir, record: RunRecord):
    """A callback that appends each finished epoch's metrics to run.json, and rewrites history.csv from it."""
    import keras

    class RecordEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            history = [h for h in record.history if h["epoch"] != epoch + 1]
            record.history = [*history, {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}]
            record.save(run)
            _write_history_csv(run, record.history)

    return RecordEpochs()


def _write_history_csv(run: RunDir, history: list[dict[str, float]]) -> None:
    """history.csv, one row per epoch: a view of run.json's history, rebuilt whole each time."""
    import csv

    columns = ["epoch", *sorted({key for epoch in history for key in epoch if key != "epoch"})]
    with atomic_path(run.history) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
