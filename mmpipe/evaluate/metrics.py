"""Classification metrics from predictions: one implementation, checked against hand-computed cases.

Conventions (the same as scikit-learn's with `zero_division=0` and its default labels): a class
that is never predicted has precision 0; a class absent from the truth has recall 0 and support 0.
Macro averages are over the classes that occur in the truth or the predictions: a class with no test
rows that the model never predicts has no F1 to average (a tiny class often has no test row at all,
and counting it as 0 would cost the macro F1 a whole class's share); one that is predicted anyway
counts, with precision 0. Weighted averages weigh by support.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# How a reader names each metric, grouped as reports and the CLI show them, best-known first;
# "top_k_accuracy" stands for the top_<k>_accuracy key of the configured k.
QUALITY = [("accuracy", "accuracy"), ("top_k_accuracy", "top-{k} accuracy"), ("macro_f1", "macro F1"),
           ("macro_precision", "macro precision"), ("macro_recall", "macro recall"), ("weighted_f1", "weighted F1"),
           ("weighted_precision", "weighted precision"), ("weighted_recall", "weighted recall")]
CALIBRATION = [("ece", "expected calibration error"), ("log_loss", "log loss"),  # lower is better
               ("ece_uncalibrated", "expected calibration error before calibration"),
               ("log_loss_uncalibrated", "log loss before calibration")]


def named(metrics: dict[str, Any], group: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(key, label) of the metrics of `group` that `metrics` has, in the group's order."""
    found = []
    for key, label in group:
        if key == "top_k_accuracy":
            key = next((name for name in metrics if name.startswith("top_") and name.endswith("_accuracy")), key)
            label = label.format(k=key.split("_")[1])
        if key in metrics:
            found.append((key, label))
    return found


_EPSILON = 1e-15  # log loss clips probabilities away from 0 so one confident mistake stays finite


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[str], *,
                           top_k: int = 2, ece_bins: int = 10) -> dict[str, Any]:
    """Metrics of `probabilities` ([n, C], rows sum to 1) against integer `labels` ([n], in 0..C-1).

    Returns {"n", "metrics": {...}, "per_class": {class: {...}}, "confusion_matrix": [[...]], "calibration": [...]}
    where confusion_matrix[i][j] counts rows of true class i predicted as j and calibration holds the
    reliability diagram's bins (`calibration_bins`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    count, num_classes = len(labels), len(classes)
    if probabilities.shape != (count, num_classes):
        raise ValueError(f"probabilities have shape {probabilities.shape}, expected ({count}, {num_classes})")
    predicted = probabilities.argmax(axis=1) if count else np.zeros(0, dtype=np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = _divide(true_positive, predicted_count)
    recall = _divide(true_positive, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    weights = support / count if count else np.zeros(num_classes)
    seen = (support > 0) | (predicted_count > 0)
    k = min(top_k, num_classes)
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    metrics = {
        "accuracy": float(true_positive.sum() / count) if count else 0.0,
        "macro_precision": _mean(precision[seen]), "macro_recall": _mean(recall[seen]), "macro_f1": _mean(f1[seen]),
        "weighted_precision": float((precision * weights).sum()), "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "log_loss": float(-np.log(np.clip(probabilities[np.arange(count), labels], _EPSILON, 1)).mean())
        if count else 0.0,
        f"top_{k}_accuracy": float((top == labels[:, None]).any(axis=1).mean()) if count else 0.0,
        "ece": expected_calibration_error(labels, probabilities, ece_bins),
    }
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(classes)}
    return {"n": count, "metrics": metrics, "per_class": per_class, "confusion_matrix": confusion.tolist(),
            "calibration": calibration_bins(labels, probabilities, ece_bins)}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else 0.0


def calibration_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Equal-width confidence bins (what a reliability diagram draws): for each bin its bounds, rows,
    accuracy and mean confidence (None for an empty bin). Bin i holds confidences in (i/bins, (i+1)/bins];
    a confidence of exactly 0 goes to bin 0."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1) if len(labels) else np.zeros(0)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64) if len(labels) else np.zeros(0)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    found = []
    for b in range(bins):
        members = index == b
        found.append({"low": b / bins, "high": (b + 1) / bins, "n": int(members.sum()),
                      "accuracy": float(correct[members].mean()) if members.any() else None,
                      "confidence": float(confidence[members].mean()) if members.any() else None})
    return found


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width confidence bins of (share of rows) x |accuracy - mean confidence|."""
    count = len(labels)
    return float(sum(b["n"] / count * abs(b["accuracy"] - b["confidence"])
                     for b in calibration_bins(labels, probabilities, bins) if b["n"])) if count else 0.0


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(np.shape(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) != 0)
    return out
