"""Where training runs: one device, mirrored over this machine's devices, or several worker processes.

TensorFlow's own strategies do the work (`tf.distribute`); this module picks one from `[train]`,
splits the CPU into logical devices when asked (so mirrored training runs, and is tested, on a
machine without a GPU), and makes the workers of a multi-worker run agree: on the run id the
chief chose, and on whether every one of them can start.

Every worker runs the same training loop, because saving a model reads variables that are kept
per replica and reduced across workers: a worker that skipped a save would leave the others
waiting. Only the chief writes into the run store; the others write the same files into a
temporary folder that is removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.config import TrainConfig
from mmpipe.errors import TrainingError
from mmpipe.runs.record import RunDir, RunRecord
from mmpipe.train.checkpoints import Checkpoint, last_checkpoint, state_path
from mmpipe.wording import counted

RUN_ID_WIDTH = 64  # characters of a run id that the chief can send to the workers


@dataclass(frozen=True)
class Distribution:
    """The strategy a run trains under, and this process's place in it."""

    strategy: Any  # a tf.distribute.Strategy
    name: str  # one_device, mirrored or multi_worker
    devices: tuple[str, ...]  # this worker's devices that hold a replica
    workers: int
    worker: int  # this process's index; 0 is the chief
    per_replica_batch: int

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def local_replicas(self) -> int:
        """Replicas on this worker (every worker has as many)."""
        return self.replicas // self.workers

    @property
    def global_batch(self) -> int:
        """Rows per training step, over every replica of every worker."""
        return self.per_replica_batch * self.replicas

    @property
    def synchronized_batch_norm(self) -> bool:
        """Batch normalization over the global batch: when mirrored over this machine's devices (then a
        step computes what one device would). Not across workers: each step would wait for a round trip
        per batch-normalization layer, measured 3.5x slower for 2 workers on one host (bench/distribute.py);
        each worker's replicas normalize over their own rows."""
        return self.name == "mirrored" and self.replicas > 1

    @property
    def chief(self) -> bool:
        """This process writes the run: the record, checkpoints, the model and the export."""
        return self.worker == 0

    def describe(self, sharding: str) -> dict[str, Any]:
        """What run.json keeps: enough to train the same way again."""
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers,
                "devices": list(self.devices), "per_replica_batch": self.per_replica_batch,
                "global_batch": self.global_batch, "sharding": sharding}

    def from_chief(self, values: list[int]) -> list[int]:
        """The chief's `values` (small integers) as every worker receives them."""
        if self.workers == 1:
            return list(values)
        import tensorflow as tf

        def first_replica_only():
            context = tf.distribute.get_replica_context()
            return tf.cast(context.replica_id_in_sync_group == 0, tf.int64) * tf.constant(values, tf.int64)

        return [int(value) for value in np.asarray(self._sum(first_replica_only))]

    def _sum(self, per_replica):
        """The sum over every replica of what `per_replica` returns on each (traced: collectives run eagerly
        are slow, and TensorFlow says so on stderr)."""
        import tensorflow as tf

        @tf.function
        def summed():
            return self.strategy.reduce("SUM", self.strategy.run(per_replica), axis=None)

        return summed()

    def all_ready(self, problem: str | None) -> None:
        """Raise on every worker unless every worker could start (a worker that raised alone would leave
        the others waiting for it in their first collective step).

        Raises:
            TrainingError: `problem` on the worker that has one; on the others, which worker failed.
        """
        if self.workers == 1:
            if problem:
                raise TrainingError(problem)
            return
        import tensorflow as tf

        failed = 0 if problem is None else 1 << min(self.worker, 62)

        def flags():  # each worker's bit, from its first replica only
            context = tf.distribute.get_replica_context()
            return tf.cast(context.replica_id_in_sync_group == self.first_replica, tf.int64) * failed

        total = int(np.asarray(self._sum(flags)))
        if problem:
            raise TrainingError(problem)
        if total:
            others = [index for index in range(self.workers) if total >> index & 1]
            raise TrainingError(f"worker {others[0]} could not start (see its output); no worker trained")

    @property
    def first_replica(self) -> int:
        """The global index of this worker's first replica."""
        return self.worker * self.local_replicas


def distribution_for(train: TrainConfig) -> Distribution:
    """The strategy `train.strategy` names, built before anything else starts TensorFlow's runtime.

    `auto` is multi_worker when TF_CONFIG names several workers, else mirrored when more than one GPU is
    visible or, without a GPU, when `cpu_devices` > 1, else one device.

    Raises:
        TrainingError: TensorFlow already started with other devices; TF_CONFIG is missing or malformed for
            multi_worker, or names several workers for a strategy of one process (each would act as the chief
            and write the same run).
    """
    import tensorflow as tf

    _split_cpu(train.cpu_devices)
    gpus = tf.config.list_physical_devices("GPU")
    name = train.strategy
    cluster = worker_of(os.environ)
    if name == "auto":
        many = len(gpus) > 1 or (not gpus and train.cpu_devices > 1)
        name = "multi_worker" if cluster else "mirrored" if many else "one_device"
    if cluster and name != "multi_worker":
        raise TrainingError(f"TF_CONFIG names {cluster[1]} workers, but train.strategy is {name}: each process would "
                            "train alone and write the same run; use train.strategy multi_worker (a resumed run "
                            "keeps the strategy it started with), or unset TF_CONFIG")
    if name == "multi_worker":
        worker, workers = _place_in_cluster(os.environ)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise TrainingError(f"train.strategy = multi_worker has to start before TensorFlow does in this "
                                f"process ({error}); start each worker as its own `mmpipe train`") from None
        logical = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")[:1]
        devices = tuple(device.name for device in logical)
        return Distribution(strategy, name, devices, workers, worker, train.batch_size)
    if name == "mirrored":
        logical = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        devices = tuple(device.name for device in logical)
        return Distribution(tf.distribute.MirroredStrategy(list(devices)), name, devices, 1, 0, train.batch_size)
    # One device: TensorFlow's default strategy, exactly what training did before strategies existed.
    device = tf.config.list_logical_devices("GPU")[:1] or tf.config.list_logical_devices("CPU")[:1]
    return Distribution(tf.distribute.get_strategy(), "one_device", (device[0].name,), 1, 0, train.batch_size)


def _split_cpu(count: int) -> None:
    """Make the CPU `count` logical devices; TensorFlow allows this only before its runtime starts."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = len(tf.config.get_logical_device_configuration(cpu) or [None])
    if current == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        raise TrainingError(f"train.cpu_devices = {count}, but TensorFlow already started in this process with "
                            f"{current} CPU device{'' if current == 1 else 's'}; start training in a fresh process "
                            "(`mmpipe train`), where the setting applies from the start") from None


def worker_of(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(this worker's index, workers) when TF_CONFIG names a cluster of several, else None."""
    try:
        worker, workers = _place_in_cluster(environ)
    except TrainingError:
        return None
    return (worker, workers) if workers > 1 else None


def _place_in_cluster(environ: Mapping[str, str]) -> tuple[int, int]:
    """(this worker's index, the chief's being 0; workers) from TF_CONFIG, checked so that a typo fails in
    one line, not deep in gRPC."""
    text = environ.get("TF_CONFIG", "")
    example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    if not text.strip():
        raise TrainingError(f"train.strategy = multi_worker needs TF_CONFIG in the environment of every worker, "
                            f"e.g. TF_CONFIG='{example}' (index 1 on the second host)")
    try:
        value = json.loads(text)
        cluster, task = value["cluster"], value["task"]
        task_type, task_id = task["type"], int(task["index"])
        cluster[task_type][task_id]  # noqa: B018 (the index must exist)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise TrainingError(f"TF_CONFIG is not usable ({type(error).__name__}: {error}); expected "
                            f"{example}") from None
    if task_type not in ("chief", "worker"):
        raise TrainingError(f"TF_CONFIG's task type is {task_type!r}; mmpipe's workers are 'chief' or 'worker'")
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    return task_id + (1 if task_type == "worker" and "chief" in cluster else 0), workers


def disagreement(distribution: Distribution, checkpoint: Checkpoint | None) -> str | None:
    """Why this worker cannot resume with the others: it found another epoch to resume from than the chief."""
    epoch = checkpoint.epoch if checkpoint else -1
    chiefs = distribution.from_chief([epoch])[0]
    if chiefs == epoch:
        return None
    found = lambda number: f"epoch {number}" if number >= 0 else "no epoch"  # noqa: E731
    return (f"worker {distribution.worker} found {found(epoch)} to resume from and the chief {found(chiefs)}: every "
            "worker must see the same run store (put RUNS on storage they share)")


def check_same_distribution(record: RunRecord, distribution: Distribution) -> None:
    """A resumed run is the same run: as many replicas (so the same global batch and steps) as it started with."""
    before = record.distribution or {"replicas": 1, "workers": 1}
    if before["replicas"] != distribution.replicas:
        raise TrainingError(f"run {record.run_id} trained on {counted(before['replicas'], 'replica')} "
                            f"({counted(before['workers'], 'worker')}) and this training has {distribution.replicas}; "
                            "resume it where it has the same devices and workers, or start a new run")


def worker_copy(run: RunDir, distribution: Distribution) -> RunDir:
    """Where a worker other than the chief writes: a copy of the run (its last complete epoch, to resume from)
    in this user's temporary folder."""
    home = Path(tempfile.gettempdir()) / f"mmpipe-{os.getuid()}"
    home.mkdir(mode=0o700, exist_ok=True)
    # A fixed name: a worker killed earlier in this run left its copy there, and this one replaces it.
    scratch = home / f"worker-{distribution.worker}-{run.run_id}"
    shutil.rmtree(scratch, ignore_errors=True)
    copy = RunDir(scratch / run.run_id)
    copy.checkpoints.mkdir(parents=True)
    checkpoint, _ = last_checkpoint(run)
    if checkpoint is not None:
        best = checkpoint.state.get("early_stopping", {}).get("best_weights")
        for path in (checkpoint.model, state_path(run, checkpoint.epoch), *([run.checkpoints / best] if best else [])):
            shutil.copy2(path, copy.checkpoints / path.name)
    return copy


def lost_worker(error: Exception, run_id: str) -> str:
    """What to do when a worker stopped mid-run (TensorFlow's heartbeats noticed, and aborted the others)."""
    listed = str(error).split("unhealthy", 1)[-1].split("The tasks", 1)[0]  # TensorFlow's list of the lost tasks
    tasks = sorted(set(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", listed)))
    who = " and ".join(f"the {job} of TF_CONFIG index {index}" for job, index in tasks) or "a worker"
    return (f"{who} stopped during run {run_id} (crashed, killed or unreachable), so the others stopped too; "
            f"start every worker again with `mmpipe train --resume {run_id}` (`--local-workers N` too, if that "
            "started them) to continue from its last complete epoch")


def encode_text(text: str) -> list[int]:
    """A short ASCII text as integers (what collectives can carry), padded to RUN_ID_WIDTH."""
    codes = [ord(character) for character in text[:RUN_ID_WIDTH]]
    return codes + [0] * (RUN_ID_WIDTH - len(codes))


def decode_text(codes: list[int]) -> str:
    return "".join(chr(code) for code in codes if code)


