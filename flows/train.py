"""The train flow: fit the model on a validated dataset version, with per-epoch progress in the UI."""

from __future__ import annotations

import os

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from flows.progress import PROGRESS_EXTRA
from flows.tracking import mirror_run_task
from mmpipe.config import Config
from mmpipe.train import TrainResult, train
from mmpipe.wording import counted


def epoch_reporter(epochs: int, what: str = "training"):
    """A Keras callback that logs each epoch and moves a Prefect progress artifact; `what` names the training."""
    import keras

    logger = get_run_logger()
    artifact = create_progress_artifact(progress=0.0, description=f"{what.capitalize()}, {counted(epochs, 'epoch')}")

    class ReportEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            update_progress_artifact(artifact, progress=100.0 * (epoch + 1) / epochs)
            shown = ", ".join(f"{key} {value:.4f}" for key, value in sorted((logs or {}).items()))
            last = next((f"{key} {logs[key]:.3f}" for key in ("val_macro_f1", "val_loss") if key in (logs or {})), "")
            logger.info("epoch %d/%d: %s", epoch + 1, epochs, shown,
                        extra={PROGRESS_EXTRA: (epoch + 1, epochs, f"{what}, epoch {epoch + 1}/{epochs} {last}")})

        def on_train_end(self, logs=None):  # early stopping ends a run before its last epoch: training is done
            update_progress_artifact(artifact, progress=100.0)

    return ReportEpochs()


@task(name="train-model", cache_policy=NO_CACHE, persist_result=False)
def train_model_task(config: Config, resume: str | None = None) -> TrainResult:
    # Where training runs is this machine's to say (a work pool's job variables), whatever was deployed.
    config = config.on_this_machine()
    return train(config, resume=resume, callbacks=[epoch_reporter(config.train.epochs)])


def _run_name() -> str:
    """"train fused"; with " (worker N of M)" when this process is one worker of a multi-worker run."""
    from prefect.runtime import flow_run

    from mmpipe.train.distribute import worker_of

    config = flow_run.parameters["config"]  # the Config passed in; its JSON form when read back from the API
    name = f"train {config.model.variant if isinstance(config, Config) else config['model']['variant']}"
    where = worker_of(os.environ)
    return name if where is None else f"{name} (worker {where[0]} of {where[1]})"


@flow(name="train", flow_run_name=_run_name)
def train_flow(config: Config, resume: str | None = None) -> dict:
    """Train on the dataset in config.data_dir (it must have passed `mmpipe validate`)."""
    result = train_model_task(config, resume)
    get_run_logger().info("run %s completed: %s", result.run_id, result.run_dir)
    # One mirror per run: the other workers of a multi-worker run wrote nothing.
    tracked = mirror_run_task(result.run_dir, config, "train") if result.chief else None
    return {**result.summary(), "tracking": tracked}
