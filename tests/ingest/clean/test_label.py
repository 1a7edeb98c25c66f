from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.clean.label import clean_label
from mmpipe.ingest.reasons import Reason


def test_label_is_stripped():
    assert clean_label("  cat \n") == "cat"


def test_empty_or_missing_label_is_rejected():
    for value in ("", "   ", None):
        rejection = clean_label(value)
        assert isinstance(rejection, Rejection)
        assert rejection.reason is Reason.LABEL_MISSING


def test_unknown_label_rejected_only_when_classes_are_configured():
    assert clean_label("cats") == "cats"
    rejection = clean_label("cats", ["cat", "dog"])
    assert rejection.reason is Reason.LABEL_UNKNOWN
    assert "'cats'" in rejection.detail and "cat, dog" in rejection.detail
    assert clean_label("dog", ["cat", "dog"]) == "dog"


def test_a_label_with_a_control_character_is_not_a_class_of_its_own():
    for value in ("cat\x00", "c\nat", "dog\x1b[31m"):
        rejection = clean_label(value)
        assert isinstance(rejection, Rejection) and rejection.reason == Reason.LABEL_UNKNOWN, value
        assert "control character" in rejection.detail

