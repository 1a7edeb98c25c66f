"""Training: tf.data input from the shards (inputs.py), the fused Keras model (model.py) and runs (fit.py)."""

from mmpipe.train.fit import RunPruned, TrainingError, TrainResult, require_validated, train
from mmpipe.train.resume import resumable_run

__all__ = ["RunPruned", "TrainResult", "TrainingError", "require_validated", "resumable_run", "train"]
