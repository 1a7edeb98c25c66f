"""A search: an Optuna study over `[tune.space]`, stored with the run store, each trial an ordinary training run.

RUNS/tuning/optuna.db holds the studies (Optuna's RDB storage on SQLite). A study is named by the dataset version
and a hash of the space and the rest of the config: the same search on the same data is the same study, so
`mmpipe tune` run again (after a kill, or beside another) goes on with it. Trials are asked for under a file lock,
so two commands on one store never run more trials than asked for, and the sampler is seeded by the seed and the
trial's place in the study, so what a trial samples does not depend on which command asks for it.

A trial trains an ordinary run (run.json records the study, the trial and its settings) judged on the validation
split only: its value is the validation macro F1 of what the run serves. Optuna's median pruner reads each epoch's
validation macro F1 and may end the run early: `pruned`, not failed. A trial whose process died (kill -9) is
failed when the next command on this host finds it, and its settings tried again, resuming its run.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.errors import MmpipeError, TrainingError, TuningError
from mmpipe.files import hold_lock, process_alive, stable_hash
from mmpipe.runs.record import RunDir, load_record, status_of
from mmpipe.train import RunPruned, resumable_run, train
from mmpipe.tune.space import Parameter, apply, check_space, configured, suggest

TUNING_DIR = "tuning"  # in the run store: the studies and their charts
STORAGE_FILE = "optuna.db"
LOCK_FILE = ".tuning.lock"
OBJECTIVE = "val_macro_f1"
# A trial's user attributes: where it trains (a dead process there: interrupted), the run it trained, the error
# that failed it (a failure without one is an interruption: tried again, not counted), a retry's origin.
HOST, PID, RUN_ID, ERROR, RETRY_OF = "host", "pid", "run_id", "error", "retry_of"
# The first trial's mark (the configuration as set), and what each completed trial's run predicts for every
# validation row, with the rows' labels: what choosing the best compares (results.chosen_trial).
CONFIGURED, VAL_PREDICTED, VAL_LABELS = "configured", "val_predicted", "val_labels"


@dataclass(frozen=True)
class Search:
    """What a tune command works on: the base config, the dataset version, the study's name and parameters."""

    config: Config
    dataset_version: str
    name: str
    parameters: list[Parameter]

    @property
    def runs_dir(self) -> Path:
        return Path(self.config.runs_dir)

    @property
    def folder(self) -> Path:
        """RUNS/tuning/<study>: the study's charts and trials table."""
        return self.runs_dir / TUNING_DIR / self.name


def plan_search(config: Config) -> Search:
    """The search `config` describes; TuningError (or the dataset's own error) before any trial when it cannot run."""
    from mmpipe.ingest.version import load_dataset
    from mmpipe.train import require_validated

    version = load_dataset(config.data_dir)
    require_validated(version)
    if not version.rows_of("val"):
        raise TuningError(f"dataset {version.version} has no validation rows, and trials are judged on them: set "
                          "[ingest.split_ratios] val above 0 and ingest again")
    config = config.model_copy(update={"runs_dir": Path(config.runs_dir).absolute()})
    name = f"{version.version}-{stable_hash({'space': config.tune.space, 'config': config.hash()}, 8)}"
    return Search(config, version.version, name, check_space(config.tune.space))


def load_study(search: Search, seed_offset: int = 0):
    """The study in the run store, created the first time (call under the search's lock: SQLite tables)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO lines repeat what mmpipe says itself
    tune = search.config.tune
    folder = search.runs_dir / TUNING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    # Two commands on one store wait for each other's writes instead of failing with "database is locked".
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / STORAGE_FILE}",
                                         engine_kwargs={"connect_args": {"timeout": 120}})
    sampler = optuna.samplers.TPESampler(seed=search.config.seed + seed_offset, n_startup_trials=tune.random_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=tune.prune_after_trials,
                                          n_warmup_steps=tune.prune_warmup_epochs)
              if tune.pruning else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=search.name, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if not study.user_attrs:  # a new study (its attributes last: a kill before them makes it new again)
        if tune.start_with_config and not study.get_trials(deepcopy=False):
            # The first trial: what training without a search gives (settings outside the space are sampled).
            study.enqueue_trial(configured(search.config, search.parameters)[0], user_attrs={CONFIGURED: True})
        for key, value in (("dataset_version", search.dataset_version), ("data_dir", str(search.config.data_dir)),
                           ("space", search.config.tune.space), ("config_hash", search.config.hash())):
            study.set_user_attr(key, value)
    return study


def search_lock(search: Search):
    return hold_lock(search.runs_dir / TUNING_DIR / LOCK_FILE)


def run_next_trial(search: Search, deadline: float | None = None,
                   callbacks: Callable[[int], list] | None = None) -> dict[str, Any] | None:
    """Ask the study for a trial and train it; its outcome, or None when the study holds its trials (or the
    deadline has passed). `callbacks(trial number)`: more Keras callbacks (progress). A trial that fails on its
    settings is recorded and the search goes on; an error of the data or the store (a MmpipeError) ends it."""
    asked = _ask(search, deadline)
    if asked is None:
        return None
    study, trial, values, resume = asked
    study_record = {"name": search.name, "trial": trial.number, "params": values}
    callbacks = [pruning_callback(trial, search.name), *(callbacks(trial.number) if callbacks else [])]
    started = time.perf_counter()
    try:
        try:
            result = _train(apply(search.config, values), resume, callbacks, study_record)
        except RunPruned as pruned:
            trial.set_user_attr(RUN_ID, pruned.run_id)
            study.tell(trial, state=_state("PRUNED"))
            _drop_checkpoints(search, pruned.run_id)
            return _outcome(trial.number, "pruned", None, pruned.run_id, values, started, str(pruned))
    except MmpipeError:  # not the settings' fault (the data, the disk): an interruption, tried again
        _requeue(study, search, trial.number, trial.params, trial.user_attrs.get(RUN_ID))
        raise
    except Exception as error:  # noqa: BLE001 - these settings cannot train (say so, and try others)
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        trial.set_user_attr(ERROR, message)
        study.tell(trial, state=_state("FAIL"))
        return _outcome(trial.number, "failed", None, None, values, started, message)
    value = served_val_macro_f1(RunDir(result.run_dir))
    trial.set_user_attr(RUN_ID, result.run_id)
    predicted, labels = validation_predictions(RunDir(result.run_dir), search.config)
    trial.set_user_attr(VAL_PREDICTED, predicted)
    trial.set_user_attr(VAL_LABELS, labels)
    study.tell(trial, value)
    _drop_checkpoints(search, result.run_id)
    return _outcome(trial.number, "completed", value, result.run_id, values, started, None)


def run_trials(search: Search, deadline: float | None = None,
               callbacks: Callable[[int], list] | None = None) -> Iterator[dict[str, Any]]:
    """The search without Prefect (a notebook, a benchmark): trials one after another until the study holds them."""
    while (outcome := run_next_trial(search, deadline, callbacks)) is not None:
        yield outcome


def _drop_checkpoints(search: Search, run_id: str | None) -> None:
    """A finished trial's per-epoch checkpoints: only a resume reads them, and a finished run is never resumed
    (50-130 MB a trial at 32 px, 20 trials a study)."""
    if run_id:
        shutil.rmtree(RunDir(search.runs_dir / run_id).checkpoints, ignore_errors=True)


def _train(config: Config, resume: str | None, callbacks: list, study: dict[str, Any]):
    """An ordinary training run; a retried trial resumes its interrupted run when it has a whole epoch."""
    from mmpipe.ingest.version import load_dataset

    if resume:
        try:
            resumable_run(Path(config.runs_dir), resume, load_dataset(config.data_dir))
        except TrainingError:
            resume = None  # killed before its first epoch ended (or its run is gone): trained anew
    return train(config, resume=resume, callbacks=callbacks, study=study)


def _ask(search: Search, deadline: float | None):
    """Under the lock: fail the trials whose process died, stop when the study is full, else the next trial."""
    with search_lock(search):
        study = load_study(search)
        _retry_interrupted(study, search)
        trials = study.get_trials(deepcopy=False)
        if len(holding(trials)) >= search.config.tune.trials or (deadline is not None and time.time() >= deadline):
            return None
        study = load_study(search, seed_offset=len(trials))  # the sampler's seed: the trial's place, not the caller
        trial = study.ask()
        trial.set_user_attr(HOST, socket.gethostname())
        trial.set_user_attr(PID, os.getpid())
        values = suggest(trial, search.parameters)
        return study, trial, values, trial.user_attrs.get(RUN_ID)


def has_room(search: Search, deadline: float | None = None) -> bool:
    """Whether the next ask would get a trial (a look, not a reservation: the ask itself decides, under the lock)."""
    if deadline is not None and time.time() >= deadline:
        return False
    return len(holding(_trials(search))) < search.config.tune.trials


def next_trial_number(search: Search) -> int | None:
    """The number the next ask will get: the first queued trial's, else a new one's (None: the study is full)."""
    if not has_room(search):
        return None
    trials = _trials(search)
    waiting = [trial.number for trial in trials if trial.state.name == "WAITING"]
    return min(waiting) if waiting else len(trials)


def _trials(search: Search) -> list:
    with search_lock(search):  # the first look may create the study
        return load_study(search).get_trials(deepcopy=False)


def holding(trials) -> list:
    """The trials that count towards `[tune] trials`: finished (completed, pruned, failed on their settings) or
    running; an interrupted one does not (its settings are tried again)."""
    return [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED", "RUNNING")
            or (trial.state.name == "FAIL" and ERROR in trial.user_attrs)]


def _retry_interrupted(study, search: Search) -> None:
    """A running trial whose process on this host is gone: failed, and its settings queued again with its run
    (resumed from its last whole epoch)."""
    here = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
        pid = trial.user_attrs.get(PID)
        if trial.user_attrs.get(HOST) != here or (isinstance(pid, int) and process_alive(pid)):
            continue
        _requeue(study, search, trial.number, trial.params, trial.user_attrs.get(RUN_ID))


def _requeue(study, search: Search, number: int, params: dict[str, Any], run_id: str | None) -> None:
    """Fail an interrupted trial (no error of its own: not counted) and queue its settings again, with the run to
    resume (a retry's own, or the one run.json says this trial was training)."""
    study.tell(number, state=_state("FAIL"))
    run_id = run_id or _run_of(search, number)
    study.enqueue_trial(dict(params), user_attrs={RETRY_OF: number, **({RUN_ID: run_id} if run_id else {})})


def _run_of(search: Search, number: int) -> str | None:
    """The interrupted run a trial was training (run.json says its study and trial), if it can be resumed."""
    for path in sorted(search.runs_dir.iterdir(), reverse=True):
        run = RunDir(path)
        if not run.record.is_file():
            continue
        try:
            record = load_record(run)
        except MmpipeError:
            continue
        if (record.study or {}).get("name") == search.name and record.study.get("trial") == number:
            return run.run_id if status_of(record) in ("interrupted", "failed") else None
    return None


def served_val_macro_f1(run: RunDir) -> float:
    """What a trial scored: the validation macro F1 of the blend the run serves (else of its kept epoch)."""
    record = load_record(run)
    if record.blend and record.blend.get("calibrated"):
        return float(record.blend["calibrated"]["macro_f1"])
    kept = [epoch for epoch in record.history if epoch["epoch"] == record.best_epoch] or record.history[-1:]
    return float(kept[0].get(OBJECTIVE, 0.0)) if kept else 0.0


def validation_predictions(run: RunDir, config: Config) -> tuple[list[int], list[int]]:
    """The class the run serves for each validation row, and the rows' labels (class indices, in shard order)."""
    from mmpipe.ingest.version import load_dataset
    from mmpipe.train.inputs import make_dataset
    from mmpipe.train.model import load_model

    model = load_model(run.model)
    predicted, labels = [], []
    for inputs, one_hot in make_dataset(load_dataset(config.data_dir), "val", batch_size=256,
                                        variant=config.model.variant):
        predicted += model.predict_on_batch(inputs).argmax(axis=1).tolist()
        labels += one_hot.numpy().argmax(axis=1).tolist()
    return predicted, labels


def pruning_callback(trial, study_name: str):
    """Reports each epoch's validation macro F1 to the trial; ends the run when the pruner says so."""
    import keras

    class PruneBelowMedian(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(OBJECTIVE)
            if value is None:
                return
            trial.report(float(value), epoch + 1)
            if trial.should_prune():
                raise RunPruned(f"pruned by study {study_name} after epoch {epoch + 1}: validation macro F1 "
                                f"{float(value):.4f}, below the median of the trials before it at that epoch")

    return PruneBelowMedian()


def _state(name: str):
    import optuna

    return getattr(optuna.trial.TrialState, name)


def _outcome(number: int, state: str, value: float | None, run_id: str | None, values: dict[str, Any],
             started: float, detail: str | None) -> dict[str, Any]:
    return {"trial": number, "state": state, OBJECTIVE: value, "run_id": run_id, "params": values,
            "seconds": round(time.perf_counter() - started, 1), "detail": detail}


def deadline_after(timeout_s: float | None) -> float | None:
    """The time after which no trial starts (None: none)."""
    return None if timeout_s is None else time.time() + timeout_s


def in_processes(parallel: int):
    """Where trials train side by side: worker processes (Keras' state is process-wide), or None for one at a
    time in this process."""
    if parallel < 2:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_trial_process_started)


def _trial_process_started() -> None:
    """A trial's worker process prints what the command would (mmpipe's lines, no library's)."""
    from mmpipe.config import ENV_DEBUG
    from mmpipe.native_logs import configure_stderr

    configure_stderr(bool(os.environ.get(ENV_DEBUG)))
