"""The fused Keras model: text and image branches, concatenated, a dense softmax head.

Inputs are named ({"text": raw strings, "image": S x S x 3 uint8}); text preprocessing lives
inside the model (TextVectorization adapted on the train split), so the saved model accepts raw
strings and training and serving cannot disagree about the vocabulary.

Every random part (initializers, dropout, augmentation) gets its own seed derived from the run's
seed: Keras would otherwise draw unseeded initializers from Python's global `random`, which any
other thread in the process (Prefect's retry jitter, say) may advance between seeding and building.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mmpipe.config import ModelConfig


def adapt_vectorizer(config: ModelConfig, texts: Iterable[np.ndarray]):
    """A TextVectorization layer whose vocabulary comes from `texts` (the train split only)."""
    import keras
    import tensorflow as tf

    vectorizer = keras.layers.TextVectorization(
        max_tokens=config.max_tokens, output_sequence_length=config.sequence_length, name="text_vectorization"
    )
    batches = list(texts)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(np.concatenate(batches) if batches else np.array([""])))
    return vectorizer


class _Seeds:
    """A fresh, reproducible seed for each random part of the model, in build order."""

    def __init__(self, seed: int):
        self.next = seed * 1_000

    def __call__(self) -> int:
        self.next += 1
        return self.next

    def glorot(self):
        import keras

        return keras.initializers.GlorotUniform(seed=self())


def build_model(config: ModelConfig, num_classes: int, image_size: int, vectorizer=None, seed: int = 0):
    """The compiled model for `config.variant` (fused, text or image); its weights depend on `seed` alone."""
    import keras

    seeds = _Seeds(seed)
    inputs, features = {}, []
    if config.variant in ("fused", "text"):
        if vectorizer is None:
            raise ValueError("the text branch needs an adapted vectorizer (adapt_vectorizer)")
        text = keras.Input(shape=(), dtype="string", name="text")
        tokens = vectorizer(text)
        embedded = keras.layers.Embedding(
            config.max_tokens, config.embedding_dim, mask_zero=True,
            embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seeds()))(tokens)
        features.append(keras.layers.LSTM(config.lstm_units, name="text_lstm", kernel_initializer=seeds.glorot(),
                                          recurrent_initializer=keras.initializers.Orthogonal(seed=seeds()),
                                          seed=seeds())(embedded))
        inputs["text"] = text
    if config.variant in ("fused", "image"):
        image = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1.0 / 255)(keras.ops.cast(image, "float32"))
        if config.augment:  # these layers are active only in training
            x = keras.layers.RandomFlip("horizontal", seed=seeds())(x)
            x = keras.layers.RandomRotation(0.05, seed=seeds())(x)
            x = keras.layers.RandomZoom(0.1, seed=seeds())(x)
            x = keras.layers.RandomContrast(0.1, seed=seeds())(x)
        for filters in config.conv_filters:
            x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same", kernel_initializer=seeds.glorot())(x)
        pool = keras.layers.Flatten() if config.pooling == "flatten" else keras.layers.GlobalAveragePooling2D()
        features.append(pool(x))
        inputs["image"] = image
    x = keras.layers.Concatenate(name="fuse")(features) if len(features) > 1 else features[0]
    x = keras.layers.Dense(config.dense_units, activation="relu", kernel_initializer=seeds.glorot())(x)
    if config.dropout_rate:
        x = keras.layers.Dropout(config.dropout_rate, seed=seeds())(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 kernel_initializer=seeds.glorot())(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name=f"mmpipe_{config.variant}")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model
