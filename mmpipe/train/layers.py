"""mmpipe's own Keras layers: modality dropout (training only) and the blend of the heads (served).

Both are registered under the package name `mmpipe`, so a saved model that holds them loads wherever this
module has been imported (`mmpipe.train.model.load_model` does). This module imports Keras at the top:
import it only where Keras is needed anyway.
"""

from __future__ import annotations

import keras

from mmpipe.train.calibrate import MIN_PROBABILITY


@keras.saving.register_keras_serializable(package="mmpipe")
class ModalityDropout(keras.layers.Layer):
    """While training, zero the text features of a `rate` share of the rows and the image features of
    another `rate` share (never both of one row), so the fused head learns to use each branch alone
    too and cannot lean on the branch that is learned first (the easier one) for every row."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 0.5:
            raise ValueError(f"modality dropout rate must be in [0, 0.5), got {rate}")
        self.rate, self.seed = rate, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        text, image = inputs
        if not training or not self.rate:
            return text, image
        draw = keras.random.uniform((keras.ops.shape(text)[0], 1), seed=self.seed_generator)
        keep_text = keras.ops.cast(draw >= self.rate, text.dtype)
        keep_image = keras.ops.cast((draw < self.rate) | (draw >= 2 * self.rate), image.dtype)
        return text * keep_text, image * keep_image

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mmpipe")
class Blend(keras.layers.Layer):
    """softmax(sum_h w_h log p_h) over the heads' probabilities (mmpipe.train.calibrate fits the weights
    on the validation split): calibration and late fusion in one step, inside the saved model, so the
    evaluation and the serving export give the same probabilities."""

    def __init__(self, heads: list[str], weights: list[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.heads = list(heads)
        initial = list(weights) if weights is not None else [1.0] + [0.0] * (len(self.heads) - 1)
        self.head_weights = self.add_weight(shape=(len(self.heads),), name="head_weights", trainable=False,
                                            initializer=keras.initializers.Constant(initial))

    def call(self, inputs):
        heads = inputs if isinstance(inputs, list | tuple) else [inputs]
        logs = keras.ops.stack([keras.ops.log(keras.ops.clip(head, MIN_PROBABILITY, 1.0)) for head in heads])
        return keras.ops.softmax(keras.ops.einsum("h,hnc->nc", self.head_weights, logs), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self):
        return {**super().get_config(), "heads": self.heads}
