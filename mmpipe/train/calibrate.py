"""Late fusion and calibration, fitted on the validation split.

A model has one head per view of a row (`fused`, and with branch heads `text` and `image`), each
giving class probabilities. What a run serves is their blend

    p = softmax(sum_h w_h * log p_h),   every w_h >= 0,

with the weights chosen to minimise the validation log loss. With one head this is temperature
scaling (T = 1 / w); with several it is a weighted product of experts, which leans on a branch that
generalises better than the fused head and ignores one that carries no signal (w near 0). The log
loss is convex in w, so the fit has one answer, found by L-BFGS-B within the bounds.

Only validation rows are used: test numbers are for reporting, never for choosing (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Probabilities are clipped away from 0 before the log: one head sure of a wrong class must not
# make a row's blend undefined.
MIN_PROBABILITY = 1e-7
MAX_WEIGHT = 20.0  # a temperature of 1/20 at the coldest
# A weak Gaussian prior towards "the first head alone, as trained" (weight 1, the rest 0), worth this
# many rows: on a validation split the model gets all right, the log loss alone would drive the
# weights to their bound (certainty); the prior keeps them finite and barely moves any other fit.
PRIOR_ROWS = 1.0


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), MIN_PROBABILITY, 1.0))


def blend(heads: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """softmax(sum_h w_h log p_h), row by row: the served prediction from the heads' probabilities."""
    logits = sum(weight * log_probabilities(head) for weight, head in zip(weights, heads, strict=True))
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def prior_weights(count: int) -> np.ndarray:
    """The first head alone, as trained: what a run without validation rows serves."""
    return np.eye(count, dtype=np.float64)[0]


def fit_blend(heads: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Weights (one per head, each in [0, MAX_WEIGHT]) that minimise the log loss of `blend` on (heads, labels).

    Args:
        heads: per head, [n, C] probabilities of the same n rows.
        labels: [n] class indices.
    """
    from scipy.optimize import minimize

    labels = np.asarray(labels, dtype=np.int64)
    logs = np.stack([log_probabilities(head) for head in heads])  # [H, n, C]
    rows = np.arange(len(labels))
    prior = prior_weights(len(heads))
    strength = PRIOR_ROWS / max(1, len(labels))

    def loss_and_gradient(weights):
        logits = np.tensordot(weights, logs, axes=1)  # [n, C]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1)
        probabilities = exp / total[:, None]
        loss = np.mean(np.log(total) - logits[rows, labels])
        # d/dw_h: the expected log p_h under the blend minus the true class's log p_h, averaged over rows.
        gradient = (np.einsum("hnc,nc->hn", logs, probabilities) - logs[:, rows, labels]).mean(axis=1)
        offset = weights - prior
        return loss + 0.5 * strength * offset @ offset, gradient + strength * offset

    if not len(labels):
        return prior
    found = minimize(loss_and_gradient, x0=np.ones(len(heads)) / len(heads), jac=True, method="L-BFGS-B",
                     bounds=[(0.0, MAX_WEIGHT)] * len(heads))
    return np.asarray(found.x, dtype=np.float64)
