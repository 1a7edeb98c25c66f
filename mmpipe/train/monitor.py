"""What training watches after each epoch: the validation split scored by every head, the heads' blend
fitted on it (mmpipe.train.calibrate), and whether a branch is still learning.

The epoch's logs get the blend's `val_loss`, `val_accuracy` and `val_macro_f1` (what early stopping
and promotion judge: the prediction the run would serve if it stopped here) and each head's own
`val_<head>_accuracy` and `val_<head>_macro_f1`. A head whose validation macro F1 beats its best by
`LEARNING_DELTA` is still learning: early stopping waits for it (checkpoints.keras_callbacks), so a
weaker branch that starts to learn late is not cut off by a stronger one that has already peaked.

The model is called directly on each batch (not through Keras' `predict`, which would spread the
rows over the workers of a multi-worker run): every worker scores the whole split with the same
weights and so takes the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmpipe.evaluate.metrics import classification_metrics
from mmpipe.train.calibrate import blend, fit_blend, prior_weights
from mmpipe.train.model import heads_of

# A head's validation macro F1 must beat its best by this much to count as still learning (one row of a
# small validation split moves it by more, so noise alone cannot keep a run going for long).
LEARNING_DELTA = 0.01
# A branch head no better than always predicting the largest class by this much carried no signal.
NO_SIGNAL_MARGIN = 0.02


@dataclass(frozen=True)
class Scored:
    """The validation split as the heads see it: per head [n, C] probabilities, and the labels."""

    heads: dict[str, np.ndarray]
    labels: np.ndarray

    def fit(self) -> np.ndarray:
        """The blend weights (one per head, in head order) fitted on these rows."""
        return fit_blend(list(self.heads.values()), self.labels) if len(self.labels) else prior_weights(
            len(self.heads))

    def blended(self, weights) -> np.ndarray:
        return blend(list(self.heads.values()), weights)


def inference(model):
    """The model called in inference mode, compiled once for any batch size: one trace a run (tracing it again
    each epoch, or for each batch size, would cost a second a time)."""
    import tensorflow as tf

    signature = {name: tf.TensorSpec(tensor.shape, tensor.dtype, name=name) for name, tensor in model.input.items()}
    return tf.function(lambda inputs: model(inputs, training=False), input_signature=[signature])


def score_heads(model, dataset, classes: list[str], call=None) -> Scored:
    """Every head's probabilities on `dataset` ((inputs, one-hot) batches); `call`: `inference(model)`."""
    call = call or inference(model)
    outputs: dict[str, list[np.ndarray]] = {}
    labels = []
    for inputs, one_hot in dataset:
        for name, value in call(inputs).items():
            outputs.setdefault(name, []).append(np.asarray(value, dtype=np.float64))
        labels.append(one_hot.numpy().argmax(axis=1))
    heads = heads_of(model)
    empty = np.zeros((0, len(classes)))
    return Scored({name: np.concatenate(outputs[name]) if name in outputs else empty for name in heads},
                  np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64))


def blend_record(scored: Scored, weights, classes: list[str], ece_bins: int = 10) -> dict[str, Any]:
    """What run.json says of the blend: the heads, their weights, and the validation log loss and ECE of the
    first head alone (as trained) and of the blend (what the run serves)."""
    first = classification_metrics(scored.labels, next(iter(scored.heads.values())), classes, ece_bins=ece_bins)
    served = classification_metrics(scored.labels, scored.blended(weights), classes, ece_bins=ece_bins)
    return {"heads": list(scored.heads), "weights": [round(float(weight), 6) for weight in weights],
            "fitted_on": {"split": "val", "rows": int(len(scored.labels))},
            "uncalibrated": {key: first["metrics"][key] for key in ("log_loss", "ece", "accuracy", "macro_f1")},
            "calibrated": {key: served["metrics"][key] for key in ("log_loss", "ece", "accuracy", "macro_f1")}}


def silent_branches(scored: Scored, weights, classes: list[str], majority: str) -> list[str]:
    """One note per branch head that did no better on validation than always predicting `majority`."""
    if len(scored.heads) < 2 or not len(scored.labels):
        return []
    constant = np.zeros((len(scored.labels), len(classes)))
    constant[:, classes.index(majority)] = 1.0
    floor = classification_metrics(scored.labels, constant, classes)["metrics"]["accuracy"]
    notes = []
    for (name, probabilities), weight in zip(list(scored.heads.items())[1:], list(weights)[1:], strict=True):
        accuracy = classification_metrics(scored.labels, probabilities, classes)["metrics"]["accuracy"]
        if accuracy <= floor + NO_SIGNAL_MARGIN:
            notes.append(f"the {name} branch carried no signal: on the validation split its head scored accuracy "
                         f"{accuracy:.3f}, always predicting {majority!r} {floor:.3f}; the served blend weighs it "
                         f"{float(weight):.2f}")
    return notes


def validation_callback(dataset, classes: list[str], saved: dict[str, Any] | None = None):
    """The callback that scores the validation split after each epoch (see the module's docstring); its
    `learning` says whether a head improved this epoch and `state()` what a checkpoint keeps of it."""
    import keras

    class ValidationScores(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = dict((saved or {}).get("best_head_macro_f1", {}))
            self.learning = False
            self.call = None

        def on_train_begin(self, logs=None):
            self.call = inference(self.model)

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            heads = heads_of(self.model)
            if len(heads) > 1 and f"{heads[0]}_accuracy" in logs:  # the model's own head is the run's accuracy
                logs["accuracy"] = logs.pop(f"{heads[0]}_accuracy")
            scored = score_heads(self.model, dataset, classes, self.call)
            served = classification_metrics(scored.labels, scored.blended(scored.fit()), classes)["metrics"]
            logs.update(val_loss=served["log_loss"], val_accuracy=served["accuracy"], val_macro_f1=served["macro_f1"])
            self.learning = False
            for name, probabilities in scored.heads.items():
                metrics = classification_metrics(scored.labels, probabilities, classes)["metrics"]
                if len(heads) > 1:
                    logs[f"val_{name}_accuracy"] = metrics["accuracy"]
                    logs[f"val_{name}_macro_f1"] = metrics["macro_f1"]
                if metrics["macro_f1"] > self.best.get(name, 0.0) + LEARNING_DELTA:
                    self.best[name] = metrics["macro_f1"]
                    self.learning = True

        def state(self) -> dict[str, Any]:
            return {"best_head_macro_f1": dict(self.best)}

    return ValidationScores()
