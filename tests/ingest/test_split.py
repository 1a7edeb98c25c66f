from collections import Counter

import pytest

from mmpipe.config import SplitRatios
from mmpipe.ingest.split import assign_split


def test_split_is_a_pure_function_of_the_key():
    ratios = SplitRatios()
    assert all(assign_split(f"k{n}", ratios) == assign_split(f"k{n}", ratios) for n in range(100))


def test_split_proportions_follow_ratios():
    counts = Counter(assign_split(f"row-{n}", SplitRatios(train=0.6, val=0.2, test=0.2)) for n in range(20_000))
    assert counts["train"] / 20_000 == pytest.approx(0.6, abs=0.02)
    assert counts["val"] / 20_000 == pytest.approx(0.2, abs=0.02)


def test_zero_ratio_split_gets_nothing():
    ratios = SplitRatios(train=0.9, val=0.1, test=0.0)
    assert {assign_split(f"r{n}", ratios) for n in range(5000)} == {"train", "val"}


def test_ratios_must_add_up_to_one():
    with pytest.raises(ValueError, match="add up to 1"):
        SplitRatios(train=0.5, val=0.1, test=0.1)
