"""The fused Keras model: text and image branches, each with a head of its own, concatenated into a fused
dense softmax head; what a run serves is the heads' blend, fitted on validation (mmpipe.train.calibrate).

Inputs are named ({"text": raw strings, "image": S x S x 3 uint8}); text preprocessing lives
inside the model (TextVectorization layers adapted on the train split), so the saved model
accepts raw strings and training and serving cannot disagree about the vocabulary.

`build_model` gives the training model: one output of class probabilities per head (`fused`, and with
branch heads `text` and `image`), each with its own loss. `serving_model` wraps it with the `Blend`
layer (mmpipe.train.layers) and is what model.keras and the serving export hold; `with_heads` opens a
served model's heads again, for the evaluation's "what fusion added".

Presets of one family (text: vectorize -> embed -> LSTM; image: Conv2D blocks; concatenated
-> Dense -> softmax; Adam + cross-entropy):
* `default`: words (split at anything not a letter or digit, so `document-open` is two) and
  character n-grams (which see inside words) side by side; per entry of `conv_filters` a
  convolution, batch normalization and a max-pool, then global average and max pooling together;
  a head per branch beside the fused head, modality dropout before the fused head, dropout, AdamW
  with weight decay and a cosine learning-rate schedule.
* `seed`: the original design, kept one setting away for ablations: words only, two 3x3 Conv2D at
  full resolution (64 and 128 filters), flatten, LSTM 128, no regularization, constant Adam.
* `pooled_seed`: the seed with global average pooling instead of flatten, for measuring what the
  default changed.

Every random part (initializers, dropout, augmentation) gets its own seed derived from the run's
seed: Keras would otherwise draw unseeded initializers from Python's global `random`, which any
other thread in the process (Prefect's retry jitter, say) may advance between seeding and building.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable

import numpy as np

from mmpipe.config import ModelConfig
from mmpipe.errors import RunStoreError
from mmpipe.wording import first_line

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
    tokenizer's standardization and two layers (mmpipe.train.layers) are mmpipe's own."""
    import keras

    import mmpipe.train.layers  # noqa: F401  (registers the layers)

    _registered_split_names()
    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, zipfile.BadZipFile) as error:  # Keras says "File not found" of a truncated file
        raise RunStoreError(f"{path} cannot be loaded ({first_line(error)}): it is damaged (changed after it was "
                            "written, or cut short by the disk) or missing; train a new run") from None


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
    # In batches: adapting row by row took 3.6 s for the demo's 770 texts, in batches 0.04 s (same vocabularies).
    corpus = tf.data.Dataset.from_tensor_slices(np.concatenate(batches) if batches else np.array([""])).batch(1024)
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


HEADS = ("fused", "text", "image")  # the blend's order: the model's own head first


def heads_of(model) -> list[str]:
    """The heads a (training) model outputs, in the blend's order: Keras may hand a dict of outputs back sorted by
    name, after a save and load for one."""
    return [name for name in HEADS if name in model.output]


def head_names(config: ModelConfig) -> list[str]:
    """The model's heads, in blend order (the first is the model's own prediction): the fused head, and with
    branch heads one per branch; a single-branch variant has that branch's head alone."""
    if config.variant != "fused":
        return [config.variant]
    if config.preset != "default" or not config.branch_loss_weight:
        return ["fused"]
    return ["fused", "text", "image"]


def build_model(config: ModelConfig, num_classes: int, image_size: int, vectorizers: dict | None = None,
                seed: int = 0, steps_per_epoch: int = 1, epochs: int = 1, synchronized_batch_norm: bool = False):
    """The compiled training model for `config.variant` (fused, text or image) and `config.preset`: named
    inputs, one output per head (`head_names`: {"fused", "text", "image"} of probabilities), each head with
    its own loss. Its weights depend on `seed` alone. `steps_per_epoch` and `epochs` size the learning-rate
    schedule. With `synchronized_batch_norm`, batch normalization takes its statistics over the global
    batch (every replica's rows, as one device would), not over each replica's part of it. What a run
    serves is `serving_model` of it: the heads blended with weights fitted on validation."""
    import keras

    from mmpipe.train.layers import ModalityDropout

    seed_preset = config.preset != "default"
    sizes = SEED_SHAPE if seed_preset else config.model_dump()
    dropout = 0.0 if seed_preset else config.dropout_rate
    seeds = _Seeds(seed)
    heads = head_names(config)
    inputs, branches = {}, {}
    if config.variant in ("fused", "text"):
        if not vectorizers:
            raise ValueError("the text branch needs adapted vectorizers (adapt_vectorizers)")
        inputs["text"] = keras.Input(shape=(), dtype="string", name="text")
        branches["text"] = _text_branch(inputs["text"], vectorizers, sizes, dropout, seeds)
    if config.variant in ("fused", "image"):
        inputs["image"] = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
        branches["image"] = _image_branch(inputs["image"], config, sizes, seeds, synchronized_batch_norm)
    if config.variant == "fused":
        text, image = branches["text"], branches["image"]
        if config.modality_dropout and not seed_preset:
            text, image = ModalityDropout(config.modality_dropout, seed=seeds(), name="modality_dropout")([text, image])
        joined = keras.layers.Concatenate(name="fuse")([text, image])
    else:
        joined = branches[config.variant]
    x = keras.layers.Dropout(dropout, seed=seeds())(joined) if dropout else joined
    x = keras.layers.Dense(sizes["dense_units"], activation="relu", kernel_initializer=seeds.glorot())(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seeds())(x)
    outputs = {heads[0]: keras.layers.Dense(num_classes, activation="softmax", name=f"{heads[0]}_head",
                                            kernel_initializer=seeds.glorot())(x)}
    for name in heads[1:]:  # a branch head reads its branch alone, with its own loss: each branch learns
        features = keras.layers.Dropout(dropout, seed=seeds())(branches[name]) if dropout else branches[name]
        outputs[name] = keras.layers.Dense(num_classes, activation="softmax", name=f"{name}_head",
                                           kernel_initializer=seeds.glorot())(features)
    model = keras.Model(inputs=inputs, outputs=outputs, name=f"mmpipe_{config.variant}")
    smoothing = 0.0 if seed_preset else config.label_smoothing
    model.compile(optimizer=_optimizer(config, steps_per_epoch * epochs),
                  loss={name: keras.losses.CategoricalCrossentropy(label_smoothing=smoothing) for name in heads},
                  loss_weights={name: 1.0 if name == heads[0] else config.branch_loss_weight for name in heads},
                  metrics={heads[0]: ["accuracy"]})
    return model


def _text_branch(text, vectorizers: dict, sizes: dict, dropout: float, seeds: _Seeds):
    """Each vectorizer's tokens -> embedding -> LSTM; the LSTMs' last states side by side."""
    import keras

    features = []
    for kind, vectorizer in vectorizers.items():
        embedded = keras.layers.Embedding(
            vectorizer.vocabulary_size(), sizes["embedding_dim"], mask_zero=True, name=f"{kind}_embedding",
            embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seeds()))(vectorizer(text))
        features.append(keras.layers.LSTM(
            sizes["lstm_units"], name=f"{kind}_lstm", kernel_initializer=seeds.glorot(),
            recurrent_initializer=keras.initializers.Orthogonal(seed=seeds()), dropout=dropout,
            seed=seeds())(embedded))
    return keras.layers.Concatenate(name="text_features")(features) if len(features) > 1 else features[0]


def _image_branch(image, config: ModelConfig, sizes: dict, seeds: _Seeds, synchronized_batch_norm: bool):
    """Rescaled pixels -> a 3x3 Conv2D block per entry of the filters -> pooled features."""
    import keras

    seed_preset = config.preset != "default"
    x = keras.layers.Rescaling(1.0 / 255)(keras.ops.cast(image, "float32"))
    if config.augment and not seed_preset:  # these layers are active only in training
        x = keras.layers.RandomFlip("horizontal", seed=seeds())(x)
        x = keras.layers.RandomRotation(0.05, seed=seeds())(x)
        x = keras.layers.RandomZoom(0.1, seed=seeds())(x)
        x = keras.layers.RandomContrast(0.1, seed=seeds())(x)
    side = image.shape[1]
    for filters in sizes["conv_filters"]:
        if seed_preset:
            x = keras.layers.Conv2D(filters, 3, activation="relu", padding="same",
                                    kernel_initializer=seeds.glorot())(x)
            continue
        # Batch normalization: measured, without it the sample's shapes took 3x the epochs to start being
        # learned. Its moving statistics follow the batches at `batch_norm_momentum` (Keras' 0.99 needs
        # hundreds of steps, more than a small dataset's first epochs have: validation lagged training by
        # epochs); and a max-pool after each convolution: most of the seed's compute saved.
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=seeds.glorot())(x)
        x = keras.layers.BatchNormalization(momentum=config.batch_norm_momentum,
                                            synchronized=synchronized_batch_norm)(x)
        x = keras.layers.ReLU()(x)
        if side >= 2:  # small images run out of pixels before they run out of blocks
            x, side = keras.layers.MaxPooling2D(2)(x), side // 2
    if config.preset == "seed" or (config.pooling == "flatten" and not seed_preset):
        return keras.layers.Flatten()(x)
    if seed_preset:  # pooled_seed
        return keras.layers.GlobalAveragePooling2D()(x)
    if config.pooling == "global_max":
        return keras.layers.GlobalMaxPooling2D()(x)
    if config.pooling == "global_average":
        return keras.layers.GlobalAveragePooling2D()(x)
    # measured: either alone left the sample's circle-vs-square at chance, both together learn it
    return keras.layers.Concatenate(name="image_features")([keras.layers.GlobalAveragePooling2D()(x),
                                                            keras.layers.GlobalMaxPooling2D()(x)])


def serving_model(model, weights):
    """What a run serves: the training model's heads blended (`Blend`) with `weights` fitted on validation,
    one output of class probabilities named `probabilities`."""
    import keras

    from mmpipe.train.layers import Blend

    heads = heads_of(model)
    blended = Blend(heads, [float(weight) for weight in weights], name="probabilities")(
        [model.output[name] for name in heads])
    return keras.Model(inputs=model.input, outputs=blended, name=model.name)


def with_heads(served):
    """A served model that also outputs each head's own probabilities: {"probabilities", "fused", "text", ...}
    (a model saved before runs had heads, without a blend, outputs its prediction alone)."""
    import keras

    from mmpipe.train.layers import Blend

    blend = next((layer for layer in served.layers if layer.name == "probabilities"), None)
    if not isinstance(blend, Blend):
        return keras.Model(inputs=served.input, outputs={"probabilities": served.output})
    heads = blend.input if isinstance(blend.input, list) else [blend.input]
    return keras.Model(inputs=served.input,
                       outputs={"probabilities": served.output, **dict(zip(blend.heads, heads, strict=True))})


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
