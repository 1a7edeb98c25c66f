"""Choosing the search's run: the best on validation replaces the configuration as set only when it beats it on
most paired resamples of the validation rows (a maximum of many noisy scores is optimistic)."""

import numpy as np
import optuna
import pytest

from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.tune.results import _macro_f1, chosen_trial, share_better
from mmpipe.tune.study import CONFIGURED, VAL_LABELS, VAL_PREDICTED

RATE = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)


def predictions(labels: np.ndarray, right: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(labels)) < right, labels, rng.integers(0, 5, len(labels)))


def study_of(labels, first, second, first_value, second_value):
    study = optuna.create_study(direction="maximize")
    trials = ((first, first_value, 2e-3, {CONFIGURED: True}), (second, second_value, 1e-2, {}))
    for predicted, value, rate, attrs in trials:
        study.add_trial(optuna.trial.create_trial(
            params={"model.learning_rate": rate}, distributions={"model.learning_rate": RATE}, value=value,
            user_attrs={**attrs, VAL_PREDICTED: predicted.tolist(), VAL_LABELS: labels.tolist()}))
    return study


def test_macro_f1_of_a_resample_is_the_evaluation_s_macro_f1():
    labels = np.random.default_rng(0).integers(0, 5, 150)
    predicted = predictions(labels, 0.6, 1)
    expected = classification_metrics(labels, np.eye(5)[predicted], list("abcde"))["metrics"]["macro_f1"]
    assert _macro_f1(labels[None], predicted[None], 5)[0] == pytest.approx(expected)


def test_a_clearly_better_trial_is_chosen_and_a_barely_better_one_is_not():
    labels = np.random.default_rng(0).integers(0, 5, 150)
    configured, much_better = predictions(labels, 0.3, 1), predictions(labels, 0.9, 2)
    chosen, why = chosen_trial(study_of(labels, configured, much_better, 0.3, 0.9), 0.9)
    assert chosen.number == 1 and "beats the configuration as set (trial 0) on 100%" in why
    # Right on 6 rows the configuration gets wrong, wrong on 5 it gets right: within what resampling moves.
    barely = configured.copy()
    wrong, right = np.flatnonzero(barely != labels)[:6], np.flatnonzero(barely == labels)[:5]
    barely[wrong], barely[right] = labels[wrong], (labels[right] + 1) % 5
    share = share_better(labels, barely, configured)
    assert 0.5 < share < 0.9
    chosen, why = chosen_trial(study_of(labels, configured, barely, 0.30, 0.31), 0.9)
    assert chosen.number == 0 and why.startswith("the configuration as set kept: trial 1 beats")
    assert chosen_trial(study_of(labels, configured, barely, 0.30, 0.31), share - 0.01)[0].number == 1
