"""tf.data from shards: shapes, zero-copy pixels, labels, deterministic order."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmpipe.ingest.version import load_dataset
from mmpipe.train.distribute import distribution_for
from mmpipe.train.inputs import (
    epoch_steps,
    image_view,
    make_dataset,
    plan_shares,
    split_paths,
    split_rows,
    training_input,
)
from tests.fixtures.datasets import SAMPLE_CLASSES, make_config


def test_image_view_is_zero_copy_and_respects_offsets():
    raw = bytes(range(12)) * 3
    column = pa.array([raw[i * 12:(i + 1) * 12] for i in range(3)], pa.binary(12)).slice(1)
    view = image_view(column, 2)
    assert view.shape == (2, 2, 2, 3) and view.base is not None
    assert view[0].tobytes() == raw[12:24]


def test_dataset_yields_named_inputs_and_one_hot_labels(ingested_sample):
    version = load_dataset(ingested_sample)
    dataset = make_dataset(version, "train", batch_size=8)
    inputs, labels = next(iter(dataset))
    assert set(inputs) == {"text", "image"}
    assert inputs["image"].shape[1:] == (16, 16, 3) and inputs["image"].dtype.name == "uint8"
    assert labels.shape[1] == len(version.classes)
    assert np.allclose(labels.numpy().sum(axis=1), 1)
    total = sum(int(batch[1].shape[0]) for batch in dataset)
    assert total == split_rows(version, "train")


def test_pixels_and_labels_match_the_shards(ingested_sample):
    version = load_dataset(ingested_sample)
    table = pq.read_table(split_paths(version, "train")[0])
    inputs, labels = next(iter(make_dataset(version, "train", batch_size=4)))
    first = np.frombuffer(table["image"][0].as_py(), np.uint8).reshape(16, 16, 3)
    assert (inputs["image"].numpy()[0] == first).all()
    assert inputs["text"].numpy()[0].decode() == table["text"][0].as_py()
    assert version.classes[int(labels.numpy()[0].argmax())] == table["label"][0].as_py()


def test_shuffle_order_is_fixed_by_the_seed(ingested_sample):
    version = load_dataset(ingested_sample)

    def order(seed):
        batches = make_dataset(version, "train", batch_size=64, variant="text", shuffle_buffer=100, seed=seed)
        return [t.decode() for t in next(iter(batches))[0]["text"].numpy()]

    assert order(1) == order(1)
    assert order(1) != order(2)


def training_epochs(data_dir, epochs, variant="text", heads=("text",), class_weights=None, seed=0):
    """Each of `epochs`' training batches as one list per epoch, on one device, as fit reads them."""
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "model.variant": variant, "seed": seed,
                                      "train.strategy": "one_device", "train.batch_size": 8})
    version = load_dataset(data_dir)
    distribution = distribution_for(config.train)
    shares = plan_shares(version, "train", 1)
    steps = epoch_steps(shares, distribution)
    batches = list(training_input(config, version, distribution, shares, epochs, steps, list(heads), class_weights))
    assert len(batches) == steps * len(epochs)
    return [batches[start:start + steps] for start in range(0, len(batches), steps)]


def texts_of(epoch) -> list[str]:
    return [text.decode() for batch in epoch for text in batch[0]["text"].numpy()]


def test_each_epoch_sees_the_rows_in_another_order_fixed_by_the_seed(ingested_sample):
    """One order every epoch makes every epoch's batches the same: the model learns the order, not the data."""
    first, second = (texts_of(epoch) for epoch in training_epochs(ingested_sample, range(2), seed=7))
    assert len(first) == split_rows(load_dataset(ingested_sample), "train")
    assert sorted(first) == sorted(second)  # every row once per epoch
    assert first != second, "epoch 2 saw the rows in epoch 1's order"
    again = [texts_of(epoch) for epoch in training_epochs(ingested_sample, range(2), seed=7)]
    assert again == [first, second]  # the same seed: the same two orders
    resumed = [texts_of(epoch) for epoch in training_epochs(ingested_sample, range(1, 2), seed=7)]
    assert resumed == [second]  # epoch 1's order depends on (seed, 1) alone, so a resume sees it again


def test_training_batches_weigh_each_row_by_its_class_weight_for_every_head(ingested_sample):
    """Class weights recorded in run.json but not fed to the loss would train as if unweighted."""
    weights = [0.5, 1.0, 2.0, 4.0]  # one per class in the dataset's class order, all different
    heads = ["fused", "text", "image"]
    (epoch,) = training_epochs(ingested_sample, range(1), "fused", heads, class_weights=weights)
    seen = set()
    for batch in epoch:
        assert len(batch) == 3, "the training batches carry no sample weights"
        _inputs, targets, sample_weights = batch
        assert set(targets) == set(heads)
        labels = targets["fused"].numpy().argmax(axis=1)
        assert all((targets[head].numpy() == targets["fused"].numpy()).all() for head in heads)
        np.testing.assert_array_equal(sample_weights.numpy(), np.take(weights, labels).astype(np.float32))
        seen.update(labels.tolist())
    assert len(seen) > 1  # rows of several classes, so a weight taken from the wrong class would show
