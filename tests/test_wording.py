"""Counts read right: `1 row`, `2 rows`, `1 class`, `0 classes`."""

import pytest

from mmpipe.wording import counted


@pytest.mark.parametrize(("count", "noun", "expected"), [
    (1, "row", "1 row"), (0, "row", "0 rows"), (2, "duplicate", "2 duplicates"), (1, "class", "1 class"),
    (3, "class", "3 classes"), (2, "critical failure", "2 critical failures"), (2, "box", "2 boxes"),
    (2, "epoch", "2 epochs"), (2, "batch", "2 batches")])
def test_counted(count, noun, expected):
    assert counted(count, noun) == expected


def test_an_irregular_plural_is_given():
    assert counted(2, "child", "children") == "2 children" and counted(1, "child", "children") == "1 child"
