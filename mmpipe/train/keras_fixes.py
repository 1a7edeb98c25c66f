"""Keras 3 bugs in training under a tf.distribute strategy, worked around while a run trains.

Both patch Keras internals for the duration of `fit` only; a Keras upgrade that moves them fails
loudly here (a TrainingError naming the Keras version) instead of training wrongly. tests/train/test_distribute.py
exercises both: re-run it after upgrading Keras, and drop a workaround once Keras fixes its bug.
"""

from __future__ import annotations

import contextlib

from mmpipe.errors import TrainingError
from mmpipe.train.distribute import Distribution


@contextlib.contextmanager
def keras_workarounds(model, distribution: Distribution):
    """Two Keras 3 (3.15) bugs in training under a strategy, worked around while the block runs.

    * A distributed model is built from the *mean* of the replicas' first batches, and a mean of the raw
      text input fails (there is no sum of strings): this model builds from the first replica's batch,
      which has the same structure and shapes.
    * Under multi-worker training each step's logs (the loss, every metric: scalars) are averaged over
      the workers along axis 0, which a scalar does not have: scalars are averaged whole.
    """
    if distribution.name == "one_device":
        yield
        return
    import keras
    from keras.src.backend.tensorflow import trainer
    from keras.src.tree import map_structure

    if not (callable(getattr(trainer, "reduce_per_replica", None)) and hasattr(model, "_maybe_symbolic_build")
            and hasattr(model, "_symbolic_build")):
        raise TrainingError(f"Keras {keras.__version__} moved what mmpipe works around in distributed training "
                            "(mmpipe/train/keras_fixes.py); train with strategy one_device, or use Keras 3.15")

    def build_from_first_replica(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = distribution.strategy.experimental_local_results(next(batches))[0]
                break
        with distribution.strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        def reduce(value):
            local = strategy.experimental_local_results(value)  # one replica per worker: the tensor itself
            if reduction in ("auto", "mean") and all(getattr(part, "shape", None) == () for part in local):
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return map_structure(reduce, values)

    model._maybe_symbolic_build = build_from_first_replica
    if distribution.name == "multi_worker":
        trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        trainer.reduce_per_replica = original
        del model._maybe_symbolic_build
