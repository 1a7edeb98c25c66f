"""The blend of the heads fitted on validation: temperature scaling with one head, late fusion with several."""

import numpy as np

from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.train.calibrate import MAX_WEIGHT, blend, fit_blend, prior_weights

ROWS, CLASSES = 400, 4
NAMES = [f"c{index}" for index in range(CLASSES)]


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def head(labels, signal, sharpness, seed):
    """Probabilities that favour the true class by `signal`, made over- (sharpness > 1) or under-confident."""
    logits = np.random.default_rng(seed).normal(0, 1, (len(labels), CLASSES))
    logits[np.arange(len(labels)), labels] += signal
    return softmax(logits * sharpness)


def scores(labels, probabilities):
    metrics = classification_metrics(labels, probabilities, NAMES)["metrics"]
    return metrics["log_loss"], metrics["ece"], metrics["accuracy"]


def test_one_overconfident_head_is_cooled_and_its_calibration_error_falls():
    labels = np.random.default_rng(0).integers(0, CLASSES, ROWS)
    probabilities = head(labels, 1.5, 4.0, seed=1)
    [weight] = fit_blend([probabilities], labels)
    assert 0.1 < weight < 0.6  # a temperature above 1
    before, after = scores(labels, probabilities), scores(labels, blend([probabilities], [weight]))
    assert after[0] < before[0] - 0.2 and after[1] < before[1] / 2
    assert after[2] == before[2]  # a temperature never changes which class wins


def test_an_underconfident_head_is_sharpened():
    labels = np.random.default_rng(2).integers(0, CLASSES, ROWS)
    [weight] = fit_blend([head(labels, 3.0, 0.3, seed=3)], labels)
    assert weight > 2


def test_a_head_without_signal_gets_no_weight_beside_one_with_signal():
    labels = np.random.default_rng(4).integers(0, CLASSES, ROWS)
    good, noise = head(labels, 2.0, 1.0, seed=5), head(labels, 0.0, 2.0, seed=6)
    weights = fit_blend([good, noise], labels)
    assert weights[0] > 0.5 and weights[1] < 0.05


def test_two_heads_that_each_know_half_the_label_are_blended_into_the_whole():
    """As in the demo: one input tells {sun, moon} from {window, lantern}, the other {sun, window} from
    {moon, lantern}; each alone is right half the time, their weighted product nearly always."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, CLASSES, ROWS)
    first_half, second_half = labels // 2, labels % 2
    one = np.where(np.arange(CLASSES)[None, :] // 2 == first_half[:, None], 0.48, 0.02)
    other = np.where(np.arange(CLASSES)[None, :] % 2 == second_half[:, None], 0.48, 0.02)
    weights = fit_blend([one, other], labels)
    assert scores(labels, one)[2] < 0.6 and scores(labels, other)[2] < 0.6
    assert scores(labels, blend([one, other], weights))[2] == 1.0 and min(weights) > 0.5


def test_a_validation_split_the_model_gets_all_right_leaves_the_weights_finite():
    labels = np.arange(20) % CLASSES
    certain = np.full((20, CLASSES), 0.01)
    certain[np.arange(20), labels] = 0.97
    [weight] = fit_blend([certain], labels)
    assert 1 < weight < MAX_WEIGHT


def test_no_validation_rows_means_the_first_head_alone():
    np.testing.assert_array_equal(fit_blend([np.zeros((0, 3)), np.zeros((0, 3))], np.zeros(0)), [1.0, 0.0])
    np.testing.assert_array_equal(prior_weights(3), [1.0, 0.0, 0.0])
