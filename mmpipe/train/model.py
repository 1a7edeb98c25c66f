"""The fused Keras model: text and image branches, concatenated, a dense softmax head.

Inputs are named ({"text": raw strings, "image": S x S x 3 uint8}); text preprocessing lives
inside the model (TextVectorization layers adapted on the train split), so the saved model
accepts raw strings and training and serving cannot disagree about the vocabulary.

Presets of one family (text: vectorize -> embed -> LSTM; image: two Conv2D; concatenated
-> Dense -> softmax; Adam + cross-entropy):
* `default`: words (split at anything not a letter or digit, so `document-open` is two) and
  character n-grams (which see inside words) side by side; batch normalization and a
  max-pool after each convolution, then global average and max pooling together (a fraction of
  the seed's compute); dropout, label smoothing, AdamW with weight decay and a cosine
  learning-rate schedule.
* `seed`: the original design, kept one setting away for ablations: words only, two 3x3 Conv2D at
  full resolution (64 and 128 filters), flatten, LSTM 128, no regularization, constant Adam.
* `pooled_seed`: the seed with global average pooling instead of flatten (mmpipe's default until
  `default` replaced it), for measuring what the new default changed.

Every random part (initializers, dropout, augmentation) gets its own seed derived from the run's
seed: Keras would otherwise draw unseeded initializers from Python's global `random`, which any
other thread in the process (Prefect's retry jitter, say) may advance between seeding and building.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mmpipe.config import ModelConfig

# The seed preset's literal sizes (whatever the config says).
SEED_SHAPE = {"embedding_dim": 64, "lstm_units": 128, "conv_filters": (64, 128), "dense_units": 64}
CHAR_NGRAMS = (1, 2, 3)
CHAR_SEQUENCE_FACTOR = 3  # a character n-gram sequence is this many times longer than a word sequence


def split_names(texts):
    """The words tokenizer's standardization: lowercase, and every run of characters that are neither
    letters nor digits becomes a space, so `document-open`, `grinning_face` and `a lantern, at night`
    are read as their words (Keras' own `lower_and_strip_punctuation` deletes the `-` and `_` and
    turns a name into one word no other name shares)."""
    import tensorflow as tf

    lowered = tf.strings.lower(texts, encoding="utf-8")  # every script's capitals, not ASCII's alone
    return tf.strings.strip(tf.strings.regex_replace(lowered, r"[^\pL\pN]+", " "))


def _registered_split_names():
    """`split_names`, registered so a saved model that uses it loads (see `load_model`)."""
    import keras

    return keras.saving.register_keras_serializable(package="mmpipe", name="split_names")(split_names)


def load_model(path):
    """A saved mmpipe model (model.keras, a checkpoint): the one way to load one, since the words
    tokenizer's standardization is mmpipe's own function."""
    import keras

    _registered_split_names()
    return keras.models.load_model(path)


def text_tokenizers(config: ModelConfig) -> list[str]:
    """Which vectorizers the text branch has: words, character n-grams, or both."""
    if config.preset != "default" or config.text_tokens == "words":
        return ["words"]
    return ["chars"] if config.text_tokens == "chars" else ["words", "chars"]


def adapt_vectorizers(config: ModelConfig, texts: Iterable[np.ndarray]) -> dict:
    """TextVectorization layers whose vocabularies come from `texts` (the train split only)."""
    import keras
    import tensorflow as tf

    batches = list(texts)
    corpus = tf.data.Dataset.from_tensor_slices(np.concatenate(batches) if batches else np.array([""]))
    layers = {}
    for kind in text_tokenizers(config):
        if kind == "words" and config.preset != "default":  # the seed's own tokenizer
            layer = keras.layers.TextVectorization(max_tokens=config.max_tokens, name="text_words",
                                                   output_sequence_length=config.sequence_length)
        elif kind == "words":
            layer = keras.layers.TextVectorization(
                max_tokens=config.max_tokens, standardize=_registered_split_names(), name="text_words",
                output_sequence_length=config.sequence_length)
        else:  # built-in modes only, so the saved model needs no custom code to load
            layer = keras.layers.TextVectorization(
                max_tokens=config.max_tokens, standardize="lower", split="character", ngrams=CHAR_NGRAMS,
                output_sequence_length=config.sequence_length * CHAR_SEQUENCE_FACTOR, name="text_chars")
        layer.adapt(corpus)
        layers[kind] = layer
    return layers


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


def build_model(config: ModelConfig, num_classes: int, image_size: int, vectorizers: dict | None = None,
                seed: int = 0, steps_per_epoch: int = 1, epochs: int = 1, synchronized_batch_norm: bool = False):
    """The compiled model for `config.variant` (fused, text or image) and `config.preset`; its weights
    depend on `seed` alone. `steps_per_epoch` and `epochs` size the learning-rate schedule. With
    `synchronized_batch_norm`, batch normalization takes its statistics over the global batch (every
    replica's rows, as one device would), not over each replica's part of it."""
    import keras

    seed_preset = config.preset != "default"
    sizes = SEED_SHAPE if seed_preset else config.model_dump()
    dropout = 0.0 if seed_preset else config.dropout_rate
    seeds = _Seeds(seed)
    inputs, features = {}, []
    if config.variant in ("fused", "text"):
        if not vectorizers:
            raise ValueError("the text branch needs adapted vectorizers (adapt_vectorizers)")
        text = keras.Input(shape=(), dtype="string", name="text")
        for kind, vectorizer in vectorizers.items():
            tokens = vectorizer(text)
            embedded = keras.layers.Embedding(
                vectorizer.vocabulary_size(), sizes["embedding_dim"], mask_zero=True, name=f"{kind}_embedding",
                embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seeds()))(tokens)
            features.append(keras.layers.LSTM(
                sizes["lstm_units"], name=f"{kind}_lstm", kernel_initializer=seeds.glorot(),
                recurrent_initializer=keras.initializers.Orthogonal(seed=seeds()), dropout=dropout,
                seed=seeds())(embedded))
        inputs["text"] = text
    if config.variant in ("fused", "image"):
        image = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1.0 / 255)(keras.ops.cast(image, "float32"))
        if config.augment and not seed_preset:  # these layers are active only in training
            x = keras.layers.RandomFlip("horizontal", seed=seeds())(x)
            x = keras.layers.RandomRotation(0.05, seed=seeds())(x)
            x = keras.layers.RandomZoom(0.1, seed=seeds())(x)
            x = keras.layers.RandomContrast(0.1, seed=seeds())(x)
        for filters in sizes["conv_filters"]:
            if seed_preset:
                x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same",
                                        kernel_initializer=seeds.glorot())(x)
                continue
            # Batch normalization: measured, without it the sample's shapes took 3x the epochs to start
            # being learned; and a max-pool after each convolution: most of the seed's compute saved.
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=seeds.glorot())(x)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization(synchronized=synchronized_batch_norm)(x))
            x = keras.layers.MaxPooling2D(2)(x)
        if config.preset == "seed" or (config.pooling == "flatten" and not seed_preset):
            x = keras.layers.Flatten()(x)
        elif seed_preset:  # pooled_seed
            x = keras.layers.GlobalAveragePooling2D()(x)
        elif config.pooling == "global_max":
            x = keras.layers.GlobalMaxPooling2D()(x)
        elif config.pooling == "global_average":
            x = keras.layers.GlobalAveragePooling2D()(x)
        else:  # measured: either alone left the sample's circle-vs-square at chance, both together learn it
            x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(x),
                                            keras.layers.GlobalMaxPooling2D()(x)])
        features.append(x)
        inputs["image"] = image
    x = keras.layers.Concatenate(name="fuse")(features) if len(features) > 1 else features[0]
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seeds())(x)
    x = keras.layers.Dense(sizes["dense_units"], activation="relu", kernel_initializer=seeds.glorot())(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seeds())(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 kernel_initializer=seeds.glorot())(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name=f"mmpipe_{config.variant}")
    model.compile(optimizer=_optimizer(config, steps_per_epoch * epochs),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.0 if seed_preset
                                                            else config.label_smoothing),
                  metrics=["accuracy", keras.metrics.F1Score(average="macro", name="macro_f1")])
    return model


def _optimizer(config: ModelConfig, total_steps: int):
    import keras

    if config.preset != "default":
        return keras.optimizers.Adam(config.learning_rate)
    rate = config.learning_rate
    if config.lr_schedule == "cosine":  # stateless but for the step count, which checkpoints keep
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, total_steps), alpha=0.05)
    return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)


def forward_flops(model) -> int:
    """Multiply-adds x 2 of one forward pass for one sample, counted from the layers' shapes
    (convolutions, dense layers and LSTMs; what the pooling, embedding lookups and activations cost
    is negligible beside them)."""
    import keras

    flops = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.Dense | keras.layers.LSTM):
            continue
        shape = (layer.input[0] if isinstance(layer.input, list) else layer.input).shape  # LSTMs also get a mask
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kernel_height, kernel_width = layer.kernel_size
            flops += 2 * height * width * channels * kernel_height * kernel_width * shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * shape[-1] * layer.units
        elif isinstance(layer, keras.layers.LSTM):
            flops += 2 * shape[1] * 4 * layer.units * (shape[2] + layer.units)
    return int(flops)
