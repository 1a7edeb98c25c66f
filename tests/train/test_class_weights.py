"""Class weights: when they apply, how far they go, that the loss's scale stays put, and that training uses them."""

import shutil

import numpy as np
import pytest

from mmpipe.config import Config
from mmpipe.runs.record import RunDir, load_record
from mmpipe.train import fit, train
from mmpipe.train.fit import MAX_CLASS_WEIGHT, class_weights
from mmpipe.train.inputs import training_input
from tests.fixtures.datasets import run_config

CLASSES = ["big", "mid", "tiny", "gone"]


def weights(setting: str, counts: dict[str, int], preset: str = "default"):
    config = Config.model_validate({"train": {"class_weights": setting}, "model": {"preset": preset}})
    return class_weights(config, counts, CLASSES)


def test_auto_leaves_a_balanced_dataset_alone_and_lifts_a_skewed_one():
    assert weights("auto", {"big": 100, "mid": 80, "tiny": 40}) is None  # 2.5x: not skewed enough
    lifted = weights("auto", {"big": 100, "mid": 80, "tiny": 25})
    assert lifted["tiny"] > lifted["mid"] > lifted["big"] > 0
    assert lifted["tiny"] / lifted["big"] == pytest.approx(2.0, rel=1e-4)  # sqrt(100 / 25)


def test_a_class_of_a_few_rows_is_capped_and_the_average_row_still_weighs_one():
    counts = {"big": 1000, "mid": 300, "tiny": 2}
    result = weights("balanced", counts)
    assert result["tiny"] / result["big"] == pytest.approx(MAX_CLASS_WEIGHT, rel=1e-4)
    assert sum(counts[name] * result[name] for name in counts) / sum(counts.values()) == pytest.approx(1.0, rel=1e-4)
    assert result["gone"] == 0.0  # a class without train rows contributes nothing


def test_none_and_the_seed_presets_never_weigh():
    skewed = {"big": 1000, "mid": 10, "tiny": 2}
    assert weights("none", skewed) is None
    assert weights("balanced", skewed, preset="seed") is None


@pytest.mark.slow  # trains a model
def test_training_feeds_the_recorded_class_weights_to_the_loss(validated_sample, tmp_path, monkeypatch):
    """Weights computed and written to run.json but never handed to fit would train as if unweighted."""
    fed = []

    def recording_training_input(*args, **kwargs):  # the real input pipeline, kept to look at what fit was given
        data = training_input(*args, **kwargs)
        fed.append(data)
        return data

    monkeypatch.setattr(fit, "training_input", recording_training_input)
    data_dir = shutil.copytree(validated_sample, tmp_path / "data")
    record = load_record(RunDir(train(run_config(data_dir, tmp_path / "runs",
                                                 **{"train.class_weights": "balanced"})).run_dir))
    assert len(set(record.class_weights.values())) > 1  # weighted and unweighted losses differ on this data
    (data,) = fed
    for batch in data:
        assert len(batch) == 3, "fit was given batches without sample weights"
        _inputs, targets, sample_weights = batch
        labels = next(iter(targets.values())).numpy().argmax(axis=1)
        expected = [record.class_weights[record.classes[label]] for label in labels]
        np.testing.assert_allclose(sample_weights.numpy(), expected, rtol=1e-6)
