"""The fused model: presets, variants, tokenizers, seeded weights, compute, save/load round trip."""

import subprocess
import sys

import numpy as np
import pytest

from mmpipe.config import ModelConfig
from mmpipe.train.model import (
    adapt_vectorizers,
    build_model,
    forward_flops,
    load_model,
    split_names,
    text_tokenizers,
)

TINY = {"max_tokens": 50, "sequence_length": 6, "embedding_dim": 4, "lstm_units": 4, "conv_filters": (4, 8),
        "dense_units": 8}
TEXTS = np.array(["document-open", "grinning_face", "a day at noon", "night moon"], dtype=object)
IMAGES = np.random.default_rng(0).integers(0, 255, size=(4, 8, 8, 3), dtype=np.uint8)


@pytest.mark.slow  # trains
@pytest.mark.parametrize("variant", ["fused", "text", "image"])
def test_variants_build_fit_and_round_trip(variant, tmp_path):
    import keras

    config = ModelConfig(variant=variant, **TINY)
    vectorizers = adapt_vectorizers(config, [TEXTS]) if variant != "image" else {}
    model = build_model(config, num_classes=3, image_size=8, vectorizers=vectorizers)
    inputs = {name: value for name, value in (("text", TEXTS), ("image", IMAGES)) if name in model.input}
    assert set(inputs) == {"fused": {"text", "image"}, "text": {"text"}, "image": {"image"}}[variant]
    labels = keras.utils.to_categorical([0, 1, 2, 0], 3)
    model.fit(inputs, labels, epochs=1, verbose=0)
    before = model.predict(inputs, verbose=0)
    assert before.shape == (4, 3) and np.allclose(before.sum(axis=1), 1, atol=1e-5)
    model.save(tmp_path / "m.keras")
    after = load_model(tmp_path / "m.keras").predict(inputs, verbose=0)
    np.testing.assert_allclose(before, after, atol=1e-6)
    if variant == "fused":  # a fresh process, where nothing has registered mmpipe's text standardization yet
        np.save(tmp_path / "before.npy", before)
        script = ("import sys, numpy as np\nfrom mmpipe.train.model import load_model\n"
                  "model = load_model(sys.argv[1])\n"
                  f"texts = np.array({TEXTS.tolist()!r}, dtype=object)\n"
                  "images = np.load(sys.argv[2])\n"
                  "after = model.predict({'text': texts, 'image': images}, verbose=0)\n"
                  "np.testing.assert_allclose(np.load(sys.argv[3]), after, atol=1e-6)\n")
        np.save(tmp_path / "images.npy", IMAGES)
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.keras"), str(tmp_path / "images.npy"),
                               str(tmp_path / "before.npy")], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]


def test_names_are_read_as_their_words_and_their_character_ngrams():
    config = ModelConfig(text_tokens="words+chars", **{**TINY, "max_tokens": 500})
    assert text_tokenizers(config) == ["words", "chars"]
    layers = adapt_vectorizers(config, [TEXTS])
    words = set(layers["words"].get_vocabulary())
    assert {"document", "open", "grinning", "face", "noon"} <= words and "documentopen" not in words
    chars = set(layers["chars"].get_vocabulary())
    assert {"d o c", "o p e", "f a c"} <= chars  # n-grams see inside words too
    assert split_names(np.array(["ΔΗΜΟΣ-Straße_5", "--", "a, b"], dtype=object)).numpy().tolist() == [
        "ΔΗΜΟΣ straße 5".lower().encode(), b"", b"a b"]  # every script lowercased, as Python does
    # The seed keeps Keras' own standardization, which deletes the separators and glues a name into one word.
    seed = ModelConfig(preset="seed", text_tokens="chars", **{**TINY, "max_tokens": 500})
    assert text_tokenizers(seed) == ["words"]
    assert "documentopen" in set(adapt_vectorizers(seed, [TEXTS])["words"].get_vocabulary())


def test_the_default_needs_a_third_of_the_compute_of_the_previous_default():
    image_config = {"variant": "image"}
    default = forward_flops(build_model(ModelConfig(**image_config), 4, 64))
    previous = forward_flops(build_model(ModelConfig(preset="pooled_seed", **image_config), 4, 64))
    seed = build_model(ModelConfig(preset="seed", **image_config), 4, 64)
    assert previous >= 3 * default and forward_flops(seed) > previous
    assert seed.count_params() > 500_000  # the seed's flatten: 64 x 64 x 128 features into the dense layer
    layer_types = {type(layer).__name__ for layer in seed.layers}
    assert "Flatten" in layer_types and "Dropout" not in layer_types and "BatchNormalization" not in layer_types


def test_text_variant_needs_a_vectorizer():
    with pytest.raises(ValueError, match="vectorizers"):
        build_model(ModelConfig(variant="text"), 3, 8)


@pytest.mark.parametrize("variant", ["fused", "text", "image"])
def test_weights_depend_on_the_seed_alone(variant):
    """Another thread drawing from Python's `random` between seeding and building (Prefect does) must not
    change the initial weights; another seed must."""
    import random

    import keras

    config = ModelConfig(variant=variant, dropout_rate=0.2, augment=True, **TINY)
    vectorizers = adapt_vectorizers(config, [TEXTS]) if variant != "image" else {}

    def weights(seed, disturb):
        keras.utils.set_random_seed(seed)
        for _ in range(disturb):
            random.random()
        model = build_model(config, num_classes=3, image_size=8, vectorizers=vectorizers, seed=seed)
        return [w.numpy() if hasattr(w, "numpy") else w for w in model.weights]

    first, disturbed, other = weights(1, 0), weights(1, 5), weights(2, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, disturbed, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
