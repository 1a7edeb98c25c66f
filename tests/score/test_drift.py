"""The drift verdict on its own: each feature's test, the thresholds, the level shared by the features."""

import numpy as np

from mmpipe.config import ScoreConfig
from mmpipe.score.drift import judge_drift


def reference(rng, rows=400, **features):
    return {"features": {"brightness": rng.normal(150, 20, rows).tolist(),
                         "image_format": ["PNG"] * (rows // 2) + ["JPEG"] * (rows // 2), **features}}


def current(rng, rows=300, shift=0.0, **features):
    return {"brightness": rng.normal(150 + shift, 20, rows),
            "image_format": np.array(["PNG"] * (rows // 2) + ["JPEG"] * (rows // 2), dtype=object), **features}


def test_a_shift_drifts_and_the_same_distribution_does_not():
    rng = np.random.default_rng(0)
    same = judge_drift(reference(rng), current(rng), ScoreConfig())
    assert not same["detected"] and not same["features"]["brightness"]["drifted"]
    darker = judge_drift(reference(rng), current(rng, shift=-40), ScoreConfig())
    assert darker["detected"] and darker["features"]["brightness"]["drifted"]
    assert not darker["features"]["image_format"]["drifted"]
    assert "brightness" in darker["note"] and "over 2 features" in darker["note"]


def test_a_significant_but_tiny_shift_is_not_drift_and_a_category_needs_its_psi():
    rng = np.random.default_rng(1)
    big = judge_drift(reference(rng, rows=20000), current(rng, rows=20000, shift=2.0), ScoreConfig())
    found = big["features"]["brightness"]
    assert found["p_value"] < 1e-6 and found["statistic"] < 0.1 and not found["drifted"]  # real, too small to matter
    formats = np.array(["PNG"] * 280 + ["GIF"] * 20, dtype=object)
    moved = judge_drift(reference(rng), current(rng, image_format=formats), ScoreConfig())
    assert moved["features"]["image_format"]["drifted"] and moved["features"]["image_format"]["statistic"] >= 0.2


def test_unknown_words_drift_only_when_they_rise():
    """The vocabulary was fitted on the train rows: fewer unknown words than held-out rows is the training data
    itself, not drift; more is new language."""
    rng = np.random.default_rng(2)
    held_out = rng.choice([0.0, 0.0, 0.1, 0.2, 0.25], 400).tolist()
    training_rows = judge_drift(reference(rng, oov_rate=held_out), current(rng, oov_rate=np.zeros(300)),
                                ScoreConfig())
    assert not training_rows["features"]["oov_rate"]["drifted"], training_rows["features"]["oov_rate"]
    new_words = judge_drift(reference(rng, oov_rate=held_out), current(rng, oov_rate=rng.uniform(0.3, 0.9, 300)),
                            ScoreConfig())
    assert new_words["features"]["oov_rate"]["drifted"] and new_words["features"]["oov_rate"]["test"] != "ks"


def test_too_few_rows_or_no_reference_is_not_judged_and_says_why():
    rng = np.random.default_rng(3)
    few = judge_drift(reference(rng), current(rng, rows=10), ScoreConfig())
    assert not few["detected"] and "fewer than score.drift_min_rows = 30" in few["note"]
    lost = judge_drift({"missing": "the data dir moved on"}, current(rng), ScoreConfig())
    assert not lost["detected"] and "the data dir moved on" in lost["note"]


def test_a_slice_that_drifted_is_found_while_the_whole_looks_the_same():
    """North got darker, south brighter: the whole's brightness barely moves, each slice's does."""
    from mmpipe.score.drift import judge_slices

    rng = np.random.default_rng(4)
    regions = ["north"] * 200 + ["south"] * 200
    known = {"features": {"brightness": rng.normal(150, 10, 400).tolist()}, "slices": {"region": regions}}
    now = np.array(["north"] * 150 + ["south"] * 150 + ["east"] * 10, dtype=object)
    brightness = np.concatenate([rng.normal(120, 10, 150), rng.normal(180, 10, 150), rng.normal(150, 10, 10)])
    found = judge_slices(known, {"brightness": brightness}, {"region": now}, ScoreConfig())
    assert set(found["region"]) == {"north", "south"}  # east: too few rows to judge, on either side
    assert all(verdict["features"]["brightness"]["drifted"] for verdict in found["region"].values())
    same = judge_slices(known, {"brightness": rng.normal(150, 10, 300)},
                        {"region": np.array(["north"] * 150 + ["south"] * 150, dtype=object)}, ScoreConfig())
    assert not any(verdict["detected"] for verdict in same["region"].values())
