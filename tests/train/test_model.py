"""The fused model: presets, variants, tokenizers, seeded weights, compute, save/load round trip."""

import subprocess
import sys

import numpy as np
import pytest

from mmpipe.config import ModelConfig
from mmpipe.train.calibrate import blend
from mmpipe.train.model import (
    adapt_vectorizers,
    build_model,
    forward_flops,
    head_names,
    load_model,
    serving_model,
    split_names,
    text_tokenizers,
    with_heads,
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
    heads = {"fused": ["fused", "text", "image"], "text": ["text"], "image": ["image"]}[variant]
    assert list(model.output) == heads == head_names(config)
    labels = keras.utils.to_categorical([0, 1, 2, 0], 3)
    history = model.fit(inputs, {name: labels for name in heads}, epochs=1, verbose=0).history
    assert {f"{name}_loss" for name in heads[1:]} <= set(history)  # each branch head learns with its own loss
    weights = [0.7, 0.4, 0.2][: len(heads)]
    served = serving_model(model, weights)
    before = served.predict(inputs, verbose=0)
    assert before.shape == (4, 3) and np.allclose(before.sum(axis=1), 1, atol=1e-5)
    own = model.predict(inputs, verbose=0)  # the served blend is calibrate.blend of the heads, inside the graph
    np.testing.assert_allclose(before, blend([own[name] for name in heads], weights), atol=1e-5)
    served.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    after = loaded.predict(inputs, verbose=0)
    np.testing.assert_allclose(before, after, atol=1e-6)
    per_head = with_heads(loaded).predict(inputs, verbose=0)
    assert set(per_head) == {"probabilities", *heads}
    np.testing.assert_allclose(per_head[heads[0]], own[heads[0]], atol=1e-6)
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


def test_heads_follow_the_variant_the_preset_and_the_branch_loss_weight():
    assert head_names(ModelConfig()) == ["fused", "text", "image"]
    assert head_names(ModelConfig(branch_loss_weight=0)) == ["fused"]
    assert head_names(ModelConfig(preset="seed")) == head_names(ModelConfig(preset="pooled_seed")) == ["fused"]
    assert head_names(ModelConfig(variant="image")) == ["image"]


def test_modality_dropout_hides_one_branch_of_some_rows_while_training_and_nothing_when_serving():
    from mmpipe.train.layers import ModalityDropout

    text, image = np.ones((4000, 3), dtype="float32"), np.ones((4000, 5), dtype="float32")
    layer = ModalityDropout(0.2, seed=1)
    seen_text, seen_image = (np.asarray(part) for part in layer([text, image], training=True))
    text_hidden, image_hidden = seen_text[:, 0] == 0, seen_image[:, 0] == 0
    assert not (text_hidden & image_hidden).any()  # never both of one row
    assert 0.17 < text_hidden.mean() < 0.23 and 0.17 < image_hidden.mean() < 0.23
    assert (seen_text[~text_hidden] == 1).all()  # kept rows are not rescaled
    for part, whole in zip(layer([text, image], training=False), (text, image), strict=True):
        np.testing.assert_array_equal(np.asarray(part), whole)


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
