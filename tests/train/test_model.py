"""The fused model: every variant builds, trains a step, and survives a save/load round trip."""

import numpy as np
import pytest

from mmpipe.config import ModelConfig
from mmpipe.train.model import adapt_vectorizer, build_model

TINY = {"max_tokens": 50, "sequence_length": 6, "embedding_dim": 4, "lstm_units": 4, "conv_filters": (4, 8),
        "dense_units": 8}
TEXTS = np.array(["a red circle", "a blue square", "night moon", "day sun"], dtype=object)
IMAGES = np.random.default_rng(0).integers(0, 255, size=(4, 8, 8, 3), dtype=np.uint8)


@pytest.mark.slow  # trains
@pytest.mark.parametrize("variant", ["fused", "text", "image"])
def test_variants_build_fit_and_round_trip(variant, tmp_path):
    import keras

    config = ModelConfig(variant=variant, **TINY)
    vectorizer = adapt_vectorizer(config, [TEXTS]) if variant != "image" else None
    model = build_model(config, num_classes=3, image_size=8, vectorizer=vectorizer)
    inputs = {name: value for name, value in (("text", TEXTS), ("image", IMAGES)) if name in model.input}
    assert set(inputs) == {"fused": {"text", "image"}, "text": {"text"}, "image": {"image"}}[variant]
    labels = keras.utils.to_categorical([0, 1, 2, 0], 3)
    model.fit(inputs, labels, epochs=1, verbose=0)
    before = model.predict(inputs, verbose=0)
    assert before.shape == (4, 3) and np.allclose(before.sum(axis=1), 1, atol=1e-5)
    model.save(tmp_path / "m.keras")
    after = keras.models.load_model(tmp_path / "m.keras").predict(inputs, verbose=0)
    np.testing.assert_allclose(before, after, atol=1e-6)


def test_default_pooling_keeps_parameters_small_and_flatten_is_available():
    config = ModelConfig(variant="image")
    pooled = build_model(config, 4, 64).count_params()
    flat = build_model(config.model_copy(update={"pooling": "flatten"}), 4, 64).count_params()
    assert pooled < 200_000 < flat  # flatten at S=64 feeds 64*64*128 features to the dense layer


def test_text_variant_needs_a_vectorizer():
    with pytest.raises(ValueError, match="vectorizer"):
        build_model(ModelConfig(variant="text"), 3, 8)


@pytest.mark.parametrize("variant", ["fused", "text", "image"])
def test_weights_depend_on_the_seed_alone(variant):
    """Another thread drawing from Python's `random` between seeding and building (Prefect does) must not
    change the initial weights; another seed must."""
    import random

    import keras

    config = ModelConfig(variant=variant, dropout_rate=0.2, augment=True, **TINY)
    vectorizer = adapt_vectorizer(config, [TEXTS]) if variant != "image" else None

    def weights(seed, disturb):
        keras.utils.set_random_seed(seed)
        for _ in range(disturb):
            random.random()
        model = build_model(config, num_classes=3, image_size=8, vectorizer=vectorizer, seed=seed)
        return [w.numpy() if hasattr(w, "numpy") else w for w in model.weights]

    first, disturbed, other = weights(1, 0), weights(1, 5), weights(2, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, disturbed, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
