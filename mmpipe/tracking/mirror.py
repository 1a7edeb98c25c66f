"""Mirror a run to MLflow from what its run dir holds: params, the epoch history (step = epoch), test,
per-class, head, baseline and slice metrics, the report and charts, and the serving export registered
as a model version, with the registry alias `champion` on the run store's champion.

The run dir is read, never written: the run store stays the record. A run is one MLflow run, found by
its tag `mmpipe.run_id`; tags `mmpipe.logged.*` say which parts are on the server, so mirroring again
(after evaluation, a resume, or by `mmpipe tracking sync`) adds only what is new.
"""

from __future__ import annotations

import calendar
import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mmpipe import __version__
from mmpipe.config import Config
from mmpipe.errors import RunStoreError, TrackingError
from mmpipe.files import hold_lock
from mmpipe.runs.record import RunDir, RunRecord, load_record, status_of
from mmpipe.runs.store import list_runs, read_champion, read_metrics
from mmpipe.tracking.names import evaluation_metrics, flat_params, is_number, registered_model_name, source_name
from mmpipe.wording import first_line

logger = logging.getLogger(__name__)

RUN_TAG = "mmpipe.run_id"
LOGGED = "mmpipe.logged."  # + training | epochs | evaluation | model: what is on the server already
CHAMPION_ALIAS = "champion"
MODEL_PATH = "model"
TRACKING_LOCK = ".tracking.lock"  # one mirror of a run at a time (a flow and `tracking sync` may meet)
_FINISHED = {"completed": "FINISHED", "failed": "FAILED"}
_MAX_PARAM = 6000  # MLflow's limit on a param value
_BATCH = 100  # params or tags per log_batch call (MLflow's limit)
_MAX_BATCH = 1000  # entries of one log_batch call, metrics and tags together (MLflow's limit)
_warned: set[str] = set()


@dataclass(frozen=True)
class Mirrored:
    """Where a run is on the tracking server."""

    uri: str
    experiment_id: str
    mlflow_run_id: str
    model_name: str
    model_version: str | None

    @property
    def url(self) -> str | None:
        """The run's page in the MLflow UI (a server's URL; None for a local store)."""
        if urlparse(self.uri).scheme not in ("http", "https"):
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.mlflow_run_id}"


def mirror_run(run_dir: Path, config: Config, links: Mapping[str, str] | None = None,
               warn: Callable[[str], None] | None = None) -> Mirrored | None:
    """Mirror one run where tracking is set ([tracking] uri or MLFLOW_TRACKING_URI); None when it is not,
    when the run is still training, or when the server did not take it: that is a warning (on this
    module's logger once per process and server, and to `warn` each time), never a failure."""
    uri = config.tracking.resolved_uri()
    if uri is None:
        return None
    run = RunDir(Path(run_dir))
    try:
        return _mirror(uri, run, config, dict(links or {}))
    except (TrackingError, RunStoreError) as error:  # a damaged run file included: mirroring fails no run
        message = (f"tracking: {error}; run {run.run_id} is complete without it: `mmpipe tracking sync --runs "
                   f"{run.path.parent}` logs it later")
        if uri not in _warned:
            _warned.add(uri)
            logger.warning(message)
        if warn is not None:
            warn(message)
        return None


def sync_runs(runs_dir: Path, config: Config) -> list[tuple[str, Mirrored | None]]:
    """Mirror every finished run of a run store, oldest first (so the champion alias ends where the store's
    champion is); runs already on the server gain only what they lack. TrackingError when tracking is not
    set or the server does not answer."""
    uri = config.tracking.resolved_uri()
    if uri is None:
        raise TrackingError("no tracking server: set MLFLOW_TRACKING_URI (or [tracking] uri in mmpipe.toml)")
    done = []
    for row in reversed(list_runs(runs_dir)):
        done.append((row["run_id"], _mirror(uri, RunDir(Path(runs_dir) / row["run_id"]), config, {})))
    return done


def _mirror(uri: str, run: RunDir, config: Config, links: dict[str, str]) -> Mirrored | None:
    record = load_record(run)
    status = status_of(record)
    if status not in _FINISHED:
        return None  # running or interrupted: nothing final to mirror yet
    _reachable(uri)
    with _talking_to(uri) as (client, errors), hold_lock(run.path / TRACKING_LOCK):
        try:
            name = config.tracking.experiment or source_name(record)
            experiment_id = _experiment(client, name)
            mlflow_run = _find_or_create(client, experiment_id, record)
            run_id, tags = mlflow_run.info.run_id, mlflow_run.data.tags
            _log_tags(client, run_id, {key: value for key, value in links.items() if value})
            _log_training(client, run_id, run, record, status, tags)
            _log_evaluation(client, run_id, run, tags)
            model_name = registered_model_name(name)
            version = tags.get(LOGGED + "model") or _registered_version(client, run_id)
            if version is None and status == "completed" and (run.serving / "saved_model.pb").is_file():
                version = _log_model(client, uri, run_id, run, record, model_name)
            _move_champion(client, experiment_id, model_name, run.path.parent)
            client.set_terminated(run_id, status=_FINISHED[status], end_time=_millis(record.finished_at))
        except errors as error:
            raise TrackingError(f"the MLflow server at {uri} did not take run {record.run_id} "
                                f"({type(error).__name__}: {first_line(error)})") from None
    return Mirrored(uri, experiment_id, run_id, model_name, version)


def _reachable(uri: str) -> None:
    """A server that does not answer its health check in seconds is said so now, not after MLflow's retries."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as error:
        raise TrackingError(f"the MLflow server at {uri} does not answer ({type(error).__name__})") from None


# MLflow's defaults for a process that talks to a person; a mirror is a side job of a command or flow. A server
# gone mid-mirror: two retries, not seven with minutes of backoff. No run links or progress bars on stdout
# (a command's --json output is one object), no download bars.
_QUIET_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@contextlib.contextmanager
def _talking_to(uri: str) -> Iterator[tuple[Any, tuple[type[BaseException], ...]]]:
    """An MLflow client for `uri` and the errors that mean the server did not take a call; MLflow's own log
    lines, warnings and prints kept off the user's terminal (they name MLflow's internals, not the run)."""
    saved = {key: os.environ.get(key) for key in _QUIET_MLFLOW}
    for key, value in _QUIET_MLFLOW.items():
        os.environ.setdefault(key, value)
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException

    quiet = logging.getLogger("mlflow")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # "Registered model ..." lines
            warnings.simplefilter("ignore")
            yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), (MlflowException,
                                                                              requests.RequestException, OSError)
    finally:
        quiet.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _experiment(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise TrackingError(f"the MLflow experiment {name!r} is deleted: restore it (`mlflow experiments restore "
                            f"--experiment-id {found.experiment_id}`) or set [tracking] experiment")
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={"mmpipe.source": name})
    except MlflowException:  # another process created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _find_or_create(client, experiment_id: str, record: RunRecord):
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{record.run_id}'",
                               max_results=1)
    if found:
        return found[0]
    created = client.create_run(experiment_id, start_time=_millis(record.started_at), run_name=record.run_id,
                                tags={RUN_TAG: record.run_id})
    return client.get_run(created.info.run_id)


def _log_training(client, run_id: str, run: RunDir, record: RunRecord, status: str, tags: dict) -> None:
    """Params and tags once; the epochs the server lacks (a resumed run adds its new ones); the curves."""
    from mlflow.entities import Param

    done = f"{status} {record.finished_at}"
    if tags.get(LOGGED + "training") == done:
        return
    if LOGGED + "training" not in tags:
        params = {**flat_params(record.config), "dataset_version": record.dataset_version,
                  "config_hash": record.config_hash, "variant": record.variant, "seed": record.seed,
                  "mmpipe_version": record.code_version, "git_commit": record.git_commit,
                  **{f"package.{name}": version for name, version in record.packages.items()}}
        _in_batches(client, run_id, params=[Param(key, str(value)[:_MAX_PARAM]) for key, value in params.items()])
    _log_epochs(client, run_id, record.history, int(tags.get(LOGGED + "epochs", 0)))
    if record.history:
        from mmpipe.evaluate import charts

        client.log_figure(run_id, charts.run_curves(record), "charts/training_curves.png")
    for path, folder in ((run.record, "run"), (run.history, "run")):
        if path.is_file():
            client.log_artifact(run_id, str(path), folder)
    page = _validation_page(record)
    if page is not None:
        client.log_artifact(run_id, str(page), "validation")
    _log_tags(client, run_id, {"mmpipe.dataset_version": record.dataset_version,
                               "mmpipe.config_hash": record.config_hash, "mmpipe.variant": record.variant,
                               "mmpipe.status": status, "mmpipe.best_epoch": record.best_epoch,
                               LOGGED + "training": done})


def _log_epochs(client, run_id: str, history: list[dict[str, Any]], logged: int) -> None:
    """The epochs after `logged`, step = epoch, in batches of whole epochs that each carry the tag saying how far
    the history is logged: one call stores both (MLflow writes a batch in one transaction), so a mirror killed
    between two calls is resumed by the next one without a point logged twice."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    batch: list[Metric] = []
    for epoch in (entry for entry in history if int(entry["epoch"]) > logged):
        points = [Metric(key if key.startswith("val_") else f"train_{key}", float(value), now, int(epoch["epoch"]))
                  for key, value in epoch.items() if key != "epoch" and is_number(value)]
        if batch and len(batch) + len(points) >= _MAX_BATCH:
            client.log_batch(run_id, metrics=batch, tags=[RunTag(LOGGED + "epochs", str(batch[-1].step))])
            batch = []
        batch += points
    if batch:
        client.log_batch(run_id, metrics=batch, tags=[RunTag(LOGGED + "epochs", str(batch[-1].step))])


def _log_evaluation(client, run_id: str, run: RunDir, tags: dict) -> None:
    """The run's own test evaluation (metrics.json), once per evaluation: its metrics (tagged in the same call),
    then its files (uploading one again replaces it), then the tag that says the evaluation is on the server."""
    from mlflow.entities import Metric, RunTag

    result = read_metrics(run.metrics)
    if result is None or tags.get(LOGGED + "evaluation") == result.get("evaluated_at"):
        return
    if tags.get(LOGGED + "evaluation_metrics") != result.get("evaluated_at"):  # once, with its tag in one call
        now = int(time.time() * 1000)
        values = [Metric(key, value, now, 0) for key, value in evaluation_metrics(result).items()]
        for start in range(0, len(values), _MAX_BATCH - 1):
            last = start + _MAX_BATCH - 1 >= len(values)
            client.log_batch(run_id, metrics=values[start:start + _MAX_BATCH - 1], tags=[
                RunTag(LOGGED + "evaluation_metrics", str(result.get("evaluated_at")))] if last else [])
    for path in (run.report, run.metrics, run.predictions, run.confusion_matrix, run.promotion):
        if path.is_file():
            client.log_artifact(run_id, str(path), "evaluation")
    calibration = result.get("calibration")
    if calibration:
        from mmpipe.evaluate import charts

        client.log_figure(run_id, charts.reliability_diagram(calibration, result["metrics"]["ece"]),
                          "charts/reliability.png")
    _log_tags(client, run_id, {LOGGED + "evaluation": result.get("evaluated_at")})


def _log_model(client, uri: str, run_id: str, run: RunDir, record: RunRecord, model_name: str) -> str:
    """The serving export as a pyfunc model version of `model_name`; its version number, also kept as a tag."""
    import mlflow

    from mmpipe.tracking.model import SERVING_ARTIFACT, ServingModel, signature

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    requirements = [f"mmpipe=={__version__}", *(f"{name}=={record.packages[name]}" for name in ("tensorflow",)
                                                 if name in record.packages)]
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.pyfunc.log_model(name=MODEL_PATH, python_model=ServingModel(),
                                       artifacts={SERVING_ARTIFACT: str(run.serving)}, signature=signature(),
                                       pip_requirements=requirements, registered_model_name=model_name)
    version = str(info.registered_model_version)
    client.set_tag(run_id, LOGGED + "model", version)
    return version


def _registered_version(client, run_id: str) -> str | None:
    """The model version a mirror registered for this MLflow run before it was killed (before its tag), if any."""
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return None
    version = str(min(int(found.version) for found in versions))
    client.set_tag(run_id, LOGGED + "model", version)
    return version


def _move_champion(client, experiment_id: str, model_name: str, runs_dir: Path) -> None:
    """The alias `champion` on the model version of the run store's champion (once that run is mirrored)."""
    from mlflow.exceptions import MlflowException

    try:
        pointer = read_champion(runs_dir)
    except RunStoreError:  # a damaged pointer is `mmpipe runs champion`'s to report; the mirror leaves the alias
        return
    if not pointer:
        return
    found = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{pointer['run_id']}'",
                               max_results=1)
    version = found[0].data.tags.get(LOGGED + "model") if found else None
    if version is None:
        return
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version
    except MlflowException:
        current = None
    if str(current) != version:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)


def _validation_page(record: RunRecord) -> Path | None:
    from mmpipe.contracts.page import PAGE_FILE

    result = (record.lineage.get("validation") or {}).get("result")
    page = Path(result).parent / PAGE_FILE if result else None
    return page if page is not None and page.is_file() else None


def _log_tags(client, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    _in_batches(client, run_id, tags=[RunTag(key, str(value)) for key, value in tags.items() if value is not None])


def _in_batches(client, run_id: str, params=(), tags=()) -> None:
    for start in range(0, max(len(params), len(tags)), _BATCH):
        client.log_batch(run_id, params=params[start:start + _BATCH], tags=tags[start:start + _BATCH])


def _millis(stamp: str | None) -> int | None:
    """An ISO UTC timestamp (run.json's) in milliseconds."""
    if not stamp:
        return None
    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) * 1000
    except ValueError:
        return None

