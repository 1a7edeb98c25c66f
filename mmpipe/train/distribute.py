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

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmpipe.config import TrainConfig
from mmpipe.errors import TrainingError
from mmpipe.runs.record import RunDir, RunRecord
from mmpipe.train.checkpoints import Checkpoint
from mmpipe.wording import counted

STRATEGIES = ("one_device", "mirrored", "multi_worker")
RUN_ID_WIDTH = 64  # characters of a run id that the chief can send to the workers


@dataclass(frozen=True)
class Distribution:
    """The strategy a run trains under, and this process's place in it."""

    strategy: Any  # a tf.distribute.Strategy
    name: str  # one of STRATEGIES
    devices: tuple[str, ...]  # this worker's devices that hold a replica
    workers: int
    worker: int  # this process's index; 0 is the chief
    per_replica_batch: int

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

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
        return self.worker * (self.replicas // self.workers)


def distribution_for(train: TrainConfig) -> Distribution:
    """The strategy `train.strategy` names, built before anything else starts TensorFlow's runtime.

    Raises:
        TrainingError: TensorFlow already started with other devices, or TF_CONFIG is missing or malformed.
    """
    import tensorflow as tf

    _split_cpu(train.cpu_devices)
    gpus = tf.config.list_physical_devices("GPU")
    name = train.strategy
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 or (not gpus and train.cpu_devices > 1) else "one_device"
    if name == "multi_worker":
        worker, workers = _place_in_cluster(os.environ)
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise TrainingError(f"train.strategy = multi_worker has to start before TensorFlow does in this "
                                f"process ({error}); start each worker as its own `mmpipe train`") from None
        devices = tuple(device.name for device in tf.config.list_logical_devices("GPU")) or ("/cpu:0",)
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
    return (f"worker {distribution.worker} found epoch {epoch} to resume from and the chief epoch {chiefs}: every "
            "worker must see the same run store (put RUNS on storage they share)")


def check_same_distribution(record: RunRecord, distribution: Distribution) -> None:
    """A resumed run is the same run: as many replicas (so the same global batch and steps) as it started with."""
    before = (record.distribution or {}).get("replicas", 1)
    if before != distribution.replicas:
        raise TrainingError(f"run {record.run_id} trained on {counted(before, 'replica')} and this process has "
                            f"{distribution.replicas}; resume it with the same devices (train.strategy "
                            f"{record.run_config.train.strategy!r}, train.cpu_devices "
                            f"{record.run_config.train.cpu_devices}), or start a new run")


def worker_copy(run: RunDir, distribution: Distribution) -> RunDir:
    """Where a worker other than the chief writes: a temporary copy of the run (its checkpoints, to resume from)."""
    # A fixed name: a worker killed earlier in this run left its copy there, and this one replaces it.
    scratch = Path(tempfile.gettempdir()) / f"mmpipe-worker-{distribution.worker}-{run.run_id}"
    shutil.rmtree(scratch, ignore_errors=True)
    copy = RunDir(scratch / run.run_id)
    if run.checkpoints.is_dir():
        shutil.copytree(run.checkpoints, copy.checkpoints)
    copy.path.mkdir(parents=True, exist_ok=True)
    return copy


def lost_worker(error: Exception, run_id: str) -> str:
    """What to do when a worker stopped mid-run (TensorFlow's heartbeats noticed, and aborted the others)."""
    listed = str(error).split("unhealthy", 1)[-1].split("The tasks", 1)[0]  # TensorFlow's list of the lost tasks
    tasks = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:(\d+)", listed)))
    who = f"worker {', '.join(tasks)}" if tasks else "a worker"
    return (f"{who} stopped during run {run_id} (crashed, killed or unreachable), so the others stopped too; "
            f"start every worker again with `mmpipe train --resume {run_id}` to continue from its last epoch")


def encode_text(text: str) -> list[int]:
    """A short ASCII text as integers (what collectives can carry), padded to RUN_ID_WIDTH."""
    codes = [ord(character) for character in text[:RUN_ID_WIDTH]]
    return codes + [0] * (RUN_ID_WIDTH - len(codes))


def decode_text(codes: list[int]) -> str:
    return "".join(chr(code) for code in codes if code)


@contextlib.contextmanager
def keras_workarounds(model, distribution: Distribution):
    """Two Keras 3 (3.15) bugs in training under a strategy, worked around while the block runs.

    * A distributed model is built from the *mean* of the replicas' first batches, and a mean of the raw
      text input fails (there is no sum of strings): this model builds from the first replica's batch,
      which has the same structure and shapes.
    * Under multi-worker training each step's logs (the loss, every metric: scalars) are averaged over
      the workers along axis 0, which a scalar does not have: scalars are averaged whole.
    """
    if distribution.name == "one_device":
        yield
        return
    from keras.src.backend.tensorflow import trainer
    from keras.src.tree import map_structure

    def build_from_first_replica(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = distribution.strategy.experimental_local_results(next(batches))[0]
                break
        with distribution.strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        def reduce(value):
            local = strategy.experimental_local_results(value)  # one replica per worker: the tensor itself
            if reduction in ("auto", "mean") and all(getattr(part, "shape", None) == () for part in local):
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return map_structure(reduce, values)

    model._maybe_symbolic_build = build_from_first_replica
    if distribution.name == "multi_worker":
        trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


def free_ports(count: int) -> list[int]:
    """`count` loopback ports that were free a moment ago (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def local_worker_environments(count: int) -> list[dict[str, str]]:
    """The environment of each of `count` workers on this host: TF_CONFIG on loopback ports, and
    train.strategy = multi_worker."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
             "MMPIPE_TRAIN__STRATEGY": "multi_worker"} for index in range(count)]


def launch_local_workers(count: int, arguments: list[str], *, env: dict[str, str] | None = None,
                         logs: Path | None = None, timeout: float | None = None,
                         capture: bool = True) -> subprocess.CompletedProcess:
    """Run `mmpipe ARGUMENTS` as `count` workers of one multi-worker run on this host.

    The chief's output is returned (with `capture`; else it goes where this process's goes); worker N's
    goes to `logs`/worker-N.log (or nowhere). When a worker fails, or `timeout` seconds pass, the others
    are stopped: they would wait for it.

    Returns:
        the chief's output, with the first non-zero exit status among the workers (124 after a timeout).
    """
    base = {**os.environ, **(env or {})}
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr, contextlib.ExitStack() as files:
        processes = []
        for index, extra in enumerate(local_worker_environments(count)):
            if index == 0:
                out, err = (stdout, stderr) if capture else (None, None)
            elif logs is not None:
                out = err = files.enter_context(open(logs / f"worker-{index}.log", "wb"))
            else:
                out = err = subprocess.DEVNULL
            processes.append(subprocess.Popen([sys.executable, "-m", "mmpipe", *arguments], env={**base, **extra},
                                              stdout=out, stderr=err))
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        try:
            while any(process.poll() is None for process in processes):
                if any(process.poll() for process in processes):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.2)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        codes = [process.returncode for process in processes]
        code = 124 if timed_out else next((code for code in codes if code), 0)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(processes[0].args, code, stdout.read().decode(errors="replace"),
                                           stderr.read().decode(errors="replace"))
