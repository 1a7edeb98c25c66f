import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

import mmpipe.ingest.clean.text as text_module
from mmpipe.ingest.clean.text import clean_text


def test_nfkc_folds_compatibility_characters():
    assert clean_text("ｆｕｌｌ\u00a0ｗｉｄｔｈ ﬁle").text == "full width file"


def test_html_tags_and_comments_are_removed_between_words():
    assert clean_text("<p>Hello</p><p>World</p><!-- note --><br/>").text == "Hello World"


def test_angle_brackets_that_are_not_tags_stay():
    assert clean_text("a < b > c and 3<4").text == "a < b > c and 3<4"


def test_control_and_zero_width_characters_are_removed():
    assert clean_text("zero\u200bwidth\u200d join\x00\x07 bell\ufeff").text == "zerowidth join bell"


def test_whitespace_collapses_and_strips():
    assert clean_text("  many\t\tspaces \n\r and lines  ").text == "many spaces and lines"


def test_lowercase_only_when_configured():
    assert clean_text("MiXeD").text == "MiXeD"
    assert clean_text("MiXeD", lowercase=True).text == "mixed"


def test_length_cap_truncates_and_reports():
    result = clean_text("word " * 100, max_chars=12)
    assert result.truncated
    assert len(result.text) <= 12
    assert result.text == "word word wo"
    assert not clean_text("short", max_chars=12).truncated


def test_truncation_never_leaves_trailing_space():
    assert clean_text("abc def", max_chars=4) == ("abc", True)


def test_markup_only_text_cleans_to_empty():
    assert clean_text("<div> <br> </div>\u200b").text == ""


def test_lone_surrogates_are_dropped():
    assert clean_text("ok\udc80ay").text == "okay"


@settings(max_examples=400, deadline=None)
@given(st.text(), st.booleans(), st.integers(min_value=1, max_value=60))
def test_cleaning_is_idempotent_and_never_raises(text, lowercase, max_chars):
    once = clean_text(text, lowercase=lowercase, max_chars=max_chars)
    twice = clean_text(once.text, lowercase=lowercase, max_chars=max_chars)
    assert twice.text == once.text
    assert not twice.truncated
    assert len(once.text) <= max_chars
    assert once.text == once.text.strip()
    assert unicodedata.is_normalized("NFKC", once.text)
    once.text.encode("utf-8")  # always storable


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/!-ab &;\u200b\u0301e \t"))))
def test_markup_heavy_text_is_idempotent(text):
    once = clean_text(text).text
    assert clean_text(once).text == once


def test_huge_pathological_markup_is_bounded_by_the_cap(monkeypatch):
    """The markup regex is superlinear on unclosed comments: it must never see more than a few times the cap."""
    seen = []
    real = text_module.MARKUP

    class Recording:
        def sub(self, replacement, value):
            seen.append(len(value))
            return real.sub(replacement, value)

    monkeypatch.setattr(text_module, "MARKUP", Recording())
    result = clean_text("<!--" * 40_000 + "<b" * 40_000, max_chars=100)
    assert result.truncated and len(result.text) <= 100
    assert seen and max(seen) <= text_module.RAW_FACTOR * 100 + 64
