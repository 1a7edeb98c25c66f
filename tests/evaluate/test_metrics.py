"""Metrics against cases computed by hand (the arithmetic is in the comments)."""

import numpy as np
import pytest

from mmpipe.evaluate.metrics import classification_metrics, expected_calibration_error


def one_hot_like(predicted, num_classes, confidence=0.8):
    """Probabilities whose argmax is `predicted`, the rest spread evenly."""
    rest = (1 - confidence) / (num_classes - 1)
    probabilities = np.full((len(predicted), num_classes), rest)
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_a_class_never_predicted():
    # truth a a b b c, predicted a b b b a: confusion [[1,1,0],[0,2,0],[1,0,0]].
    # precision a 1/2, b 2/3, c 0 (never predicted); recall a 1/2, b 1, c 0; F1 a 1/2, b 0.8, c 0.
    result = classification_metrics([0, 0, 1, 1, 2], one_hot_like([0, 1, 1, 1, 0], 3), ["a", "b", "c"])
    metrics = result["metrics"]
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["macro_precision"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert metrics["macro_recall"] == pytest.approx((1 / 2 + 1) / 3)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8) / 3)
    assert metrics["weighted_f1"] == pytest.approx((0.5 * 2 + 0.8 * 2 + 0 * 1) / 5)
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["log_loss"] == pytest.approx(-(3 * np.log(0.8) + 2 * np.log(0.1)) / 5)


def test_a_class_absent_from_the_test_set():
    # truth a b b, predicted a b c: c has support 0 and one false positive -> P 0, R 0 (0/0), F1 0.
    # a: P 1, R 1; b: P 1, R 1/2, F1 2/3. Macro counts c, weighted does not (weight 0).
    result = classification_metrics([0, 1, 1], one_hot_like([0, 1, 2], 3), ["a", "b", "c"])
    metrics = result["metrics"]
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics["weighted_f1"] == pytest.approx((1 * 1 + 2 / 3 * 2) / 3)
    assert result["per_class"]["c"]["support"] == 0 and result["per_class"]["c"]["precision"] == 0.0


def test_a_class_absent_and_never_predicted_has_no_f1_to_average():
    # A tiny class with no test row (c): the macro average is over a and b, as scikit-learn's default.
    result = classification_metrics([0, 1, 1], one_hot_like([0, 1, 0], 3), ["a", "b", "c"])
    assert result["metrics"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert result["metrics"]["macro_recall"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_top_k_accuracy_counts_the_second_guess():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    # truth b c a: first guesses a c b -> 1 of 3 right; in the top 2: b yes, c yes, a no -> 2 of 3.
    metrics = classification_metrics([1, 2, 0], probabilities, ["a", "b", "c"], top_k=2)["metrics"]
    assert metrics["accuracy"] == pytest.approx(1 / 3) and metrics["top_2_accuracy"] == pytest.approx(2 / 3)


def test_expected_calibration_error_by_hand():
    # Two rows at confidence 0.9 (one right): |0.5 - 0.9| = 0.4, weight 1/2.
    # Two rows at confidence 0.6 (both right): |1 - 0.6| = 0.4, weight 1/2. ECE = 0.4.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert expected_calibration_error(np.array([0, 1, 1, 1]), probabilities, bins=10) == pytest.approx(0.4)
    perfectly_calibrated = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(np.array([0, 1]), perfectly_calibrated) == 0.0


def test_expected_calibration_error_weighs_each_bin_by_its_share_of_rows():
    """An unweighted mean over bins lets a bin of one row count as much as a bin of hundreds."""
    # Three rows at confidence 0.9, all right: |1 - 0.9| = 0.1, weight 3/4.
    # One row at confidence 0.6, wrong: |0 - 0.6| = 0.6, weight 1/4.
    # ECE = 3/4 * 0.1 + 1/4 * 0.6 = 0.075 + 0.15 = 0.225; the unweighted mean (0.1 + 0.6) / 2 = 0.35 is wrong.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    assert expected_calibration_error(np.array([0, 0, 1, 1]), probabilities, bins=10) == pytest.approx(0.225)


def test_empty_input_and_wrong_shapes():
    assert classification_metrics([], np.zeros((0, 2)), ["a", "b"])["metrics"]["accuracy"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], np.zeros((2, 3)), ["a", "b"])
