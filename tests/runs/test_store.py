"""The run store's views: list, show, compare, on written run dirs."""

import pytest

from mmpipe.errors import RunStoreError
from mmpipe.runs.store import compare_runs, list_runs, show_run
from tests.fixtures.runs import make_run


def test_list_show_compare(tmp_path):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.7, "dog": 0.5}, epochs=3)
    make_run(tmp_path, "20260103T000000Z-c", None, status="failed")
    rows = list_runs(tmp_path)
    assert [row["run_id"] for row in rows] == ["20260103T000000Z-c", "20260102T000000Z-b", "20260101T000000Z-a"]
    assert rows[0]["status"] == "failed" and rows[0]["macro_f1"] is None
    assert list_runs(tmp_path, "other-version") == []
    diff = compare_runs(tmp_path, "20260101T000000Z-a", "20260102T000000Z-b")
    assert diff["metrics"]["macro_f1"]["delta"] == pytest.approx(0.0)
    assert diff["per_class_f1"]["cat"]["delta"] == pytest.approx(0.1)
    assert diff["per_class_f1"]["dog"]["delta"] == pytest.approx(-0.1)
    assert diff["config"] == {"train.epochs": {"a": 1, "b": 3}} and diff["dataset"]["same"]
    assert show_run(tmp_path, "20260103T000000Z-c")["evaluation"] is None
    with pytest.raises(RunStoreError, match="runs list"):
        show_run(tmp_path, "nope")
