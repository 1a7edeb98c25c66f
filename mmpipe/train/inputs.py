"""tf.data over the Parquet shards: whole record batches, zero-copy pixels, bounded memory.

Each shard is read with pyarrow `iter_batches` (no per-row Python work); the fixed-size image
column is viewed as a uint8 array of shape (rows, S, S, 3) without copying; shards are
interleaved, rows shuffled in a bounded buffer, batched and prefetched.

Under a multi-worker strategy each worker reads its own share of a split: whole row groups of the
shard files, dealt out so the shares have about as many rows each (`plan_shares`). Only when a split
has too few row groups for even shares (a small dataset) does every worker read it all and keep
every n-th row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmpipe.config import Config
from mmpipe.errors import TrainingError
from mmpipe.ingest.version import DatasetVersion
from mmpipe.train.distribute import Distribution
from mmpipe.wording import counted

READ_BATCH_ROWS = 1024
# Row-group shares are used when the smallest share has at least this fraction of an even share's rows.
MIN_SHARE_FRACTION = 0.5
INPUTS = {"fused": ("text", "image"), "text": ("text",), "image": ("image",)}


def split_paths(version: DatasetVersion, split: str) -> list[Path]:
    """The shard files of one split, in dataset.json order."""
    return [version.path_of(entry) for entry in version.shards_of(split)]


def split_rows(version: DatasetVersion, split: str) -> int:
    return version.rows_of(split)


@dataclass(frozen=True)
class Shares:
    """How a split is divided among input pipelines (workers): `parts[i]` lists pipeline i's
    (shard path, row group) pairs, row group -1 meaning the whole file, and `rows[i]` its rows;
    `by_rows` when every pipeline reads all of it and keeps every n-th row."""

    parts: list[list[tuple[str, int]]]
    rows: list[int]
    by_rows: bool

    @property
    def sharding(self) -> str:
        """In words, for run.json."""
        if len(self.parts) == 1:
            return "none"
        return "every n-th row (too few row groups for even shares)" if self.by_rows else "row groups"


def plan_shares(version: DatasetVersion, split: str, pipelines: int) -> Shares:
    """Deal a split's row groups to `pipelines` readers: the largest group first, each to the reader with
    the fewest rows so far; each reader's groups are then read in file order. The plan depends on the
    files alone, so every worker computes the same one."""
    paths = [str(path) for path in split_paths(version, split)]
    total = split_rows(version, split)
    if pipelines == 1:
        return Shares([[(path, -1) for path in paths]], [total], by_rows=False)
    groups = [(path, group, metadata.row_group(group).num_rows) for path in paths
              for metadata in [pq.ParquetFile(path).metadata] for group in range(metadata.num_row_groups)]
    parts: list[list[tuple[str, int]]] = [[] for _ in range(pipelines)]
    rows = [0] * pipelines
    for path, group, count in sorted(groups, key=lambda unit: -unit[2]):  # stable: ties stay in file order
        emptiest = rows.index(min(rows))
        parts[emptiest].append((path, group))
        rows[emptiest] += count
    if min(rows) < MIN_SHARE_FRACTION * total / pipelines or not min(rows):
        everything = [(path, -1) for path in paths]
        return Shares([everything] * pipelines, [len(range(index, total, pipelines)) for index in range(pipelines)],
                      by_rows=True)
    order = {path: index for index, path in enumerate(paths)}
    return Shares([sorted(part, key=lambda unit: (order[unit[0]], unit[1])) for part in parts], rows, by_rows=False)


def epoch_steps(shares: Shares, distribution: Distribution) -> int:
    """Steps per epoch over the train split's `shares`: enough for the largest worker's share to be read whole
    (a smaller share starts over for the steps it lacks, so every row is seen each epoch); on one worker,
    ceil(rows / global batch)."""
    if min(shares.rows) < distribution.local_replicas:  # a replica would get no rows at all
        raise TrainingError(f"the train split has {counted(sum(shares.rows), 'row')}: too few for "
                            f"{counted(distribution.replicas, 'replica')}; train on one device")
    rows_per_step = distribution.global_batch // distribution.workers
    return max(1, max(math.ceil(rows / rows_per_step) for rows in shares.rows))


def image_view(column: pa.Array, image_size: int) -> np.ndarray:
    """(rows, S, S, 3) uint8 view of a fixed_size_binary(S*S*3) column, without copying."""
    width = image_size * image_size * 3
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.type != pa.binary(width):
        raise ValueError(f"image column has type {column.type}, expected fixed_size_binary({width})")
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=len(column) * width,
                         offset=column.offset * width)
    return data.reshape(len(column), image_size, image_size, 3)


def read_arrays(path: Path, classes: list[str], image_size: int, variant: str,
                with_ids: bool = False, row_group: int = -1) -> Iterator[dict]:
    """{"text", "image", "label" index[, "id"]} numpy arrays per record batch of one shard (of one of
    its row groups, if `row_group` is not -1)."""
    columns = [*INPUTS[variant], "label", *(["id"] if with_ids else [])]
    index = pa.array(classes)
    groups = None if row_group < 0 else [row_group]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS, row_groups=groups, columns=columns):
        labels = pc.index_in(batch.column("label"), value_set=index)
        if labels.null_count:
            raise ValueError(f"{path.name} has labels outside the dataset's classes {classes}")
        arrays = {"label": labels.to_numpy(zero_copy_only=False).astype(np.int32)}
        if with_ids:
            arrays["id"] = batch.column("id").to_numpy(zero_copy_only=False).astype(object)
        if "text" in columns:
            arrays["text"] = batch.column("text").to_numpy(zero_copy_only=False).astype(object)
        if "image" in columns:
            arrays["image"] = image_view(batch.column("image"), image_size)
        yield arrays


def make_dataset(version: DatasetVersion, split: str, *, batch_size: int, variant: str = "fused",
                 shuffle_buffer: int = 0, seed: int = 0, with_ids: bool = False,
                 share: tuple[Shares, int] | None = None):
    """A tf.data.Dataset of ({input: tensor}, one-hot label) batches for one split.

    With `shuffle_buffer`, rows are shuffled within that many rows with a fixed `seed`, so the
    same seed gives the same order; shards are interleaved in a fixed order. `with_ids` adds
    each row's id as a third element (evaluation keeps predictions with their rows). `share`
    (shares, index) reads only pipeline `index`'s share of the split.
    """
    import tensorflow as tf

    classes = list(version.classes)
    size = version.image_size
    shares, index = share or (plan_shares(version, split, 1), 0)
    units = shares.parts[index]
    paths = [path for path, _ in units]
    groups = [group for _, group in units]
    signature = {"label": tf.TensorSpec((None,), tf.int32)}
    if with_ids:
        signature["id"] = tf.TensorSpec((None,), tf.string)
    if "text" in INPUTS[variant]:
        signature["text"] = tf.TensorSpec((None,), tf.string)
    if "image" in INPUTS[variant]:
        signature["image"] = tf.TensorSpec((None, size, size, 3), tf.uint8)

    def shard(path, group):
        return tf.data.Dataset.from_generator(
            lambda p, g: read_arrays(Path(p.decode()), classes, size, variant, with_ids, int(g)), args=(path, group),
            output_signature=signature
        )

    batches = tf.data.Dataset.from_tensor_slices((paths or [""], groups or [-1])).take(len(paths)).interleave(
        shard, cycle_length=max(1, min(4, len(paths)))  # sequential interleave: a fixed order
    )
    if shuffle_buffer or shares.by_rows:
        rows = batches.unbatch()
        if shares.by_rows:
            rows = rows.shard(len(shares.parts), index)
        if shuffle_buffer:
            rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        batched = rows.batch(batch_size)
    else:  # the same batches in the same order without a per-row pass (input pipeline 1.07x on the demo data)
        batched = batches.rebatch(batch_size)
    one_hot = len(classes)

    def to_model(row):
        pair = ({name: row[name] for name in INPUTS[variant]}, tf.one_hot(row["label"], one_hot))
        return (*pair, row["id"]) if with_ids else pair

    return batched.map(
        to_model, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def training_input(config: Config, version: DatasetVersion, distribution: Distribution, shares: Shares, epochs: range,
                   steps: int, heads: list[str], class_weights: list[float] | None = None):
    """The remaining epochs' training batches: `steps` per epoch, each of the global batch's rows, each
    worker reading its part of `shares` (the train split's, one part per worker).

    Epoch e's order depends on (seed, e) only, so a resume sees the same batches. Each worker reads
    its own share of the split in batches of its replicas' rows, cut into one part per replica: so on
    one worker, each step sees the rows one device would see in that step. A share with fewer rows
    than its steps need starts over (so no worker runs out while the others wait for it in a step).
    `class_weights` (one per class) become each row's sample weight here: Keras' own `class_weight`
    cannot be applied to a distributed dataset. Every one of the model's `heads` learns the same labels.
    """
    import tensorflow as tf

    def pipeline(context: tf.distribute.InputContext):
        replicas = distribution.local_replicas
        data = None
        for epoch in epochs:
            epoch_data = make_dataset(
                version, "train", batch_size=context.get_per_replica_batch_size(distribution.global_batch) * replicas,
                variant=config.model.variant, shuffle_buffer=config.train.shuffle_buffer, seed=config.seed + epoch,
                share=(shares, context.input_pipeline_id))
            if replicas > 1:  # a last batch of fewer rows than replicas would leave a replica none
                epoch_data = epoch_data.filter(lambda inputs, labels: tf.shape(labels)[0] >= replicas)
            epoch_data = epoch_data.repeat().take(steps)
            data = epoch_data if data is None else data.concatenate(epoch_data)
        data = for_heads(data, heads, class_weights)
        return data if replicas == 1 else data.flat_map(lambda *batch: _parts(batch, replicas))

    if distribution.name == "one_device":
        return pipeline(tf.distribute.InputContext())  # one pipeline, the batches training always had
    return distribution.strategy.distribute_datasets_from_function(pipeline)


def for_heads(data, heads: list[str], class_weights: list[float] | None = None):
    """(inputs, one-hot) batches as the training model takes them: the labels once per head, and each row's
    class weight (one per class) as its sample weight when given."""
    import tensorflow as tf

    def to_heads(inputs, labels):
        targets = {name: labels for name in heads}
        if not class_weights:
            return inputs, targets
        return inputs, targets, tf.gather(tf.constant(class_weights, tf.float32), tf.argmax(labels, axis=1))

    return data.map(to_heads, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _parts(batch: tuple, count: int):
    """One batch (inputs, labels[, weights]) as `count` consecutive parts, one per replica, whose sizes
    differ by one row at most (equal but in the last batch of an epoch)."""
    import tensorflow as tf

    size = tf.shape(tf.nest.flatten(batch[1])[0], out_type=tf.int64)[0]  # the labels, one per head

    def part(index):
        rows = slice(index * size // count, (index + 1) * size // count)
        return tf.nest.map_structure(lambda tensor: tensor[rows], batch)

    return tf.data.Dataset.range(count).map(part)


def validation_input(config: Config, version: DatasetVersion):
    """The validation split in batches, for this process alone: every worker scores all of it with the same
    weights (it is small, and equal work keeps the workers in step and their decisions the same)."""
    return make_dataset(version, "val", batch_size=config.evaluate.batch_size, variant=config.model.variant)


def train_texts(version: DatasetVersion) -> Iterator[np.ndarray]:
    """The train split's texts, batch by batch (what the text vectorizer is adapted on)."""
    for path in split_paths(version, "train"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS, columns=["text"]):
            yield batch.column("text").to_numpy(zero_copy_only=False).astype(object)
