"""What training watches on validation: the blend's record, and the branches that carried no signal."""

import numpy as np

from mmpipe.train.monitor import Scored, blend_record, silent_branches

CLASSES = ["cat", "dog", "owl"]


def scored_rows():
    """120 rows, "cat" the largest class: a text head that knows the label, an image head that always says cat."""
    labels = np.array([0] * 60 + [1] * 30 + [2] * 30)
    text = np.full((120, 3), 0.05)
    text[np.arange(120), labels] = 0.9
    image = np.tile([0.5, 0.25, 0.25], (120, 1))
    return Scored({"fused": text.copy(), "text": text, "image": image}, labels)


def test_a_branch_no_better_than_the_largest_class_is_named_with_its_numbers_and_weight():
    scored = scored_rows()
    weights = scored.fit()
    [note] = silent_branches(scored, weights, CLASSES, majority="cat")
    assert note.startswith("the image branch carried no signal: on the validation split its head scored accuracy "
                           "0.500, always predicting 'cat' 0.500")
    assert note.endswith(f"the served blend weighs it {weights[2]:.2f}")


def test_branches_with_signal_and_single_head_models_get_no_note():
    scored = scored_rows()
    both = Scored({"fused": scored.heads["fused"], "text": scored.heads["text"], "image": scored.heads["text"]},
                  scored.labels)
    assert silent_branches(both, [1, 1, 1], CLASSES, majority="cat") == []
    alone = Scored({"image": scored.heads["image"]}, scored.labels)  # the image variant: nothing to compare with
    assert silent_branches(alone, [1], CLASSES, majority="cat") == []


def test_the_blend_record_says_what_was_fitted_on_what_and_what_calibration_changed():
    scored = scored_rows()
    weights = scored.fit()
    record = blend_record(scored, weights, CLASSES)
    assert record["heads"] == ["fused", "text", "image"] and record["fitted_on"] == {"split": "val", "rows": 120}
    assert record["weights"] == [round(float(weight), 6) for weight in weights]
    assert record["calibrated"]["log_loss"] < record["uncalibrated"]["log_loss"]  # the fused head alone, as trained
    assert record["calibrated"]["accuracy"] == record["uncalibrated"]["accuracy"] == 1.0
