"""Checkpoints that make a resumed run the same run: the model, and the state of every callback that
decides what happens next (early stopping's best value, patience and best weights) and of the
random generators of dropout and augmentation.

After each epoch, in this order, each file through a temporary name and a rename:
  checkpoints/epoch-NNN.keras         the model with its optimizer state
  checkpoints/best-NNN.npz            early stopping's best weights, when epoch NNN improved on them
  checkpoints/epoch-NNN.json          the callback state; written last, so it marks the epoch complete
A resume starts from the newest epoch whose three parts are all there and readable, and says when
it had to skip a newer, broken one (a kill in the middle of writing it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.files import atomic_path, write_json_atomic
from mmpipe.runs.record import RunDir

STATE_FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """A complete epoch to resume from: its number, model file and callback state."""

    epoch: int
    model: Path
    state: dict[str, Any]

    @property
    def stopped(self) -> bool:
        """Early stopping had ended training at this epoch: nothing is left to train."""
        return bool(self.state.get("early_stopping", {}).get("stopped"))

    def restore_random_state(self, model) -> None:
        """Put dropout's and augmentation's random generators where they were (Keras' loader resets them)."""
        for variable, value in zip(_seed_states(model), self.state.get("seed_generators", []), strict=True):
            variable.assign(np.array(value, dtype=variable.dtype))

    def best_weights(self, run: RunDir) -> list[np.ndarray] | None:
        name = self.state.get("early_stopping", {}).get("best_weights")
        if not name:
            return None
        with np.load(run.checkpoints / name) as arrays:
            return [arrays[f"w{i}"] for i in range(len(arrays.files))]


def best_weights_path(run: RunDir, epoch: int) -> Path:
    return run.checkpoints / f"best-{epoch:03d}.npz"


def state_path(run: RunDir, epoch: int) -> Path:
    return run.checkpoints / f"epoch-{epoch:03d}.json"


def last_checkpoint(run: RunDir) -> tuple[Checkpoint | None, list[str]]:
    """The newest complete epoch, and one line per newer epoch that had to be skipped (and why)."""
    skipped: list[str] = []
    epochs = sorted({int(path.stem.split("-")[1]) for path in run.checkpoints.glob("epoch-*.keras")}, reverse=True)
    for epoch in epochs:
        state_file, model = state_path(run, epoch), run.checkpoint(epoch)
        try:
            state = json.loads(state_file.read_text())
        except (FileNotFoundError, ValueError):
            skipped.append(f"epoch {epoch}: its checkpoint was not completely written")
            continue
        best = state.get("early_stopping", {}).get("best_weights")
        if best and not (run.checkpoints / best).is_file():
            skipped.append(f"epoch {epoch}: the best weights it refers to ({best}) are missing")
            continue
        return Checkpoint(epoch, model, state), skipped
    return None, skipped


def keras_callbacks(run: RunDir, monitor: str, mode: str, patience: int, warmup: int,
                    resume_from: Checkpoint | None, record_epoch, validation=None) -> list:
    """`validation` (monitor.validation_callback: it puts the epoch's validation scores in its logs), early
    stopping that can be resumed, `record_epoch` (it writes the epoch into run.json), then the callback
    that writes the epoch's checkpoint: the checkpoint comes last, so the record is never behind the
    checkpoint a resume starts from."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """Keras' early stopping, whose counters and best weights survive an interruption; patience counts
        the epochs in which neither the monitored value nor any head's own validation score improved (a
        weaker branch that starts to learn late is not cut off)."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            saved = (resume_from.state if resume_from else {}).get("early_stopping")
            if saved:
                self.wait, self.best, self.best_epoch = saved["wait"], saved["best"], saved["best_epoch"]
                self.best_weights = resume_from.best_weights(run)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if validation is not None and validation.learning and epoch >= self.start_from_epoch and self.wait:
                self.wait = 0
                if self.stopped_epoch == epoch:  # stopped just now, by this callback: a head is still learning
                    self.model.stop_training, self.stopped_epoch = False, 0

        def state(self, epoch: int) -> dict[str, Any]:
            best_file = None
            if self.best_weights is not None:
                best_file = best_weights_path(run, self.best_epoch + 1).name
                if not (run.checkpoints / best_file).is_file():
                    with atomic_path(run.checkpoints / best_file) as temp, open(temp, "wb") as handle:
                        np.savez(handle, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            best = None if self.best is None else float(self.best)
            return {"wait": self.wait, "best": best, "best_epoch": self.best_epoch, "best_weights": best_file,
                    "stopped": bool(self.model.stop_training)}

    early_stopping = ResumableEarlyStopping(monitor=monitor, mode=mode, patience=patience, start_from_epoch=warmup,
                                            restore_best_weights=True)

    class SaveCheckpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            number = epoch + 1
            with atomic_path(run.checkpoint(number), suffix=".keras") as temp:  # Keras wants the suffix
                self.model.save(temp)
            seeds = [np.asarray(variable.numpy()).tolist() for variable in _seed_states(self.model)]
            write_json_atomic(state_path(run, number), {"format": STATE_FORMAT, "epoch": number,
                                                        "early_stopping": early_stopping.state(epoch),
                                                        "validation": validation.state() if validation else None,
                                                        "seed_generators": seeds})

    return [*([validation] if validation else []), early_stopping, record_epoch, SaveCheckpoint()]


def _seed_states(model) -> list:
    """The state variables of the model's random generators (dropout, augmentation), in a stable order."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]
