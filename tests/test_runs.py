"""The run store and champion/challenger rules, on run directories written the way runs write them.

These runs carry their metrics.json (as `mmpipe evaluate` writes it) on one shared dataset version,
so the champion's score on the challenger's test set is already there: the rules are tested alone.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmpipe.config import EvaluateConfig, load_config
from mmpipe.errors import RunStoreError
from mmpipe.evaluate import EvaluationError
from mmpipe.evaluate.promote import promote
from mmpipe.runs.record import RunDir, RunRecord
from mmpipe.runs.store import compare_runs, list_runs, read_champion, show_run

CLASSES = ["cat", "dog"]


def make_run(runs_dir: Path, run_id: str, f1: dict[str, float] | None, *, status="completed", epochs=1,
             absent=()):
    """A finished run dir; `f1` per class gives its metrics.json (None: not evaluated); classes in
    `absent` have no rows in the test set."""
    run = RunDir(runs_dir / run_id)
    run.path.mkdir(parents=True)
    config = load_config(None, {"train.epochs": epochs}, environ={})
    record = RunRecord(run_id=run_id, status=status, variant="fused", seed=1, dataset_version="v1",
                       data_dir=str(runs_dir / "data"), classes=CLASSES, config=config.model_dump(mode="json"),
                       config_hash=config.hash(), code_version="0", started_at=run_id,
                       lineage={"counts": {"test": {"cat": 5, "dog": 5}}})
    record.save(run)
    if f1 is not None:
        per_class = {name: {"precision": f1[name], "recall": f1[name], "f1": f1[name],
                            "support": 0 if name in absent else 5} for name in f1}
        macro = sum(f1.values()) / len(f1)
        run.metrics.write_text(json.dumps({
            "run_id": run_id, "split": "test", "dataset_version": "v1", "data_dir": record.data_dir, "n": 10,
            "primary": True, "classes": CLASSES, "metrics": {"accuracy": macro, "macro_f1": macro},
            "per_class": per_class, "confusion_matrix": [[5, 0], [0, 5]], "out_dir": str(run.path),
            "report": str(run.report), "evaluated_at": run_id}))
    return run.path


RULES = EvaluateConfig(promote_margin=0.01, max_class_f1_drop=0.05)


def test_first_run_becomes_champion(tmp_path):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    decision = promote(tmp_path, "20260101T000000Z-a", RULES)
    assert decision["promoted"] and decision["champion_before"] is None and "first" in decision["reasons"][0]
    assert read_champion(tmp_path)["run_id"] == "20260101T000000Z-a"


@pytest.mark.parametrize(("challenger", "promoted", "reason"), [
    ({"cat": 0.7, "dog": 0.7}, True, "meets the margin"),
    ({"cat": 0.605, "dog": 0.6}, False, "below the margin"),  # better, but by less than the margin
    ({"cat": 0.5, "dog": 0.6}, False, "below the margin"),  # worse
    ({"cat": 0.5, "dog": 0.95}, False, "class cat: F1 drops from 0.6000 to 0.5000"),  # better on average
])
def test_challenger_rules(tmp_path, challenger, promoted, reason):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    promote(tmp_path, "20260101T000000Z-a", RULES)
    make_run(tmp_path, "20260102T000000Z-b", challenger)
    decision = promote(tmp_path, "20260102T000000Z-b", RULES)
    assert decision["promoted"] is promoted and any(reason in line for line in decision["reasons"])
    assert decision["champion_before"] == "20260101T000000Z-a" and decision["test_set"]["dataset_version"] == "v1"
    expected = "20260102T000000Z-b" if promoted else "20260101T000000Z-a"
    assert read_champion(tmp_path)["run_id"] == expected
    # The decision is recorded in the run and made once: asking again gives the same answer.
    assert json.loads((tmp_path / "20260102T000000Z-b" / "promotion.json").read_text()) == decision
    assert promote(tmp_path, "20260102T000000Z-b", RULES) == decision


def test_a_class_absent_from_the_test_set_does_not_skew_the_comparison(tmp_path):
    # The champion knows "bird", which this test set lacks (F1 0, support 0): counting it would put the
    # champion at (0.6 + 0.6 + 0) / 3 = 0.4 and promote a challenger that is only 0.005 better.
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6, "bird": 0.0}, absent=("bird",))
    promote(tmp_path, "20260101T000000Z-a", RULES)
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.605, "dog": 0.605})
    decision = promote(tmp_path, "20260102T000000Z-b", RULES)
    assert not decision["promoted"] and "below the margin" in decision["reasons"][0]


def test_unevaluated_run_cannot_be_promoted(tmp_path):
    make_run(tmp_path, "20260101T000000Z-a", None)
    with pytest.raises(EvaluationError, match="mmpipe evaluate"):
        promote(tmp_path, "20260101T000000Z-a", RULES)


PROMOTE_IN_A_PROCESS = """
import sys
from pathlib import Path
from mmpipe.config import EvaluateConfig
from mmpipe.evaluate.promote import promote
promote(Path(sys.argv[1]), sys.argv[2], EvaluateConfig())
"""


@pytest.mark.parametrize("attempt", range(3))
def test_two_promotions_at_once_keep_the_pointer_consistent(tmp_path, attempt):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    promote(tmp_path, "20260101T000000Z-a", RULES)
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.8, "dog": 0.8})
    make_run(tmp_path, "20260102T000000Z-c", {"cat": 0.9, "dog": 0.9})
    workers = [subprocess.Popen([sys.executable, "-c", PROMOTE_IN_A_PROCESS, str(tmp_path), run_id])
               for run_id in ("20260102T000000Z-b", "20260102T000000Z-c")]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    champion = read_champion(tmp_path)
    b, c = (json.loads((tmp_path / f"20260102T000000Z-{x}" / "promotion.json").read_text()) for x in "bc")
    # Whatever the order, C (the best) ends as champion, and the later decision saw the earlier one.
    assert champion["run_id"] == "20260102T000000Z-c" and c["promoted"]
    if b["promoted"]:
        assert c["champion_before"] == "20260102T000000Z-b" and champion["previous"] == "20260102T000000Z-b"
    else:
        assert b["champion_before"] == "20260102T000000Z-c"
    assert [row["run_id"] for row in list_runs(tmp_path) if row["champion"]] == ["20260102T000000Z-c"]


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
