"""Champion / challenger: the promotion rules, the decision record and the lock, on written run dirs."""

import json
import subprocess
import sys
import threading

import pytest

import mmpipe.evaluate.promote
import mmpipe.runs.store
from mmpipe.config import EvaluateConfig
from mmpipe.errors import EvaluationError
from mmpipe.evaluate.promote import promote
from mmpipe.runs.record import RunDir
from mmpipe.runs.store import list_runs, read_champion
from tests.fixtures.runs import make_run

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
    assert json.loads(RunDir(tmp_path / "20260102T000000Z-b").promotion.read_text()) == decision
    assert promote(tmp_path, "20260102T000000Z-b", RULES) == decision


def test_a_class_absent_from_the_test_set_does_not_skew_the_comparison(tmp_path):
    # The champion knows "bird", which this test set lacks (F1 0, support 0): counting it would put the
    # champion at (0.6 + 0.6 + 0) / 3 = 0.4 and promote a challenger that is only 0.005 better.
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6, "bird": 0.0}, absent=("bird",))
    promote(tmp_path, "20260101T000000Z-a", RULES)
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.605, "dog": 0.605})
    decision = promote(tmp_path, "20260102T000000Z-b", RULES)
    assert not decision["promoted"] and "below the margin" in decision["reasons"][0]


def test_a_run_no_better_than_the_majority_class_is_never_promoted(tmp_path):
    floor = EvaluateConfig(promote_margin=0.01, max_class_f1_drop=0.05, min_gain_over_majority=0.05)
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6}, majority=0.58)  # +0.02 only
    decision = promote(tmp_path, "20260101T000000Z-a", floor)
    assert not decision["promoted"] and read_champion(tmp_path) is None  # not even as the first run
    assert decision["reasons"] == ["accuracy 0.6000 does not beat always predicting 'cat' (0.5800) "
                                   "by min_gain_over_majority 0.05"]
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.6, "dog": 0.6}, majority=0.5)  # +0.10
    assert promote(tmp_path, "20260102T000000Z-b", floor)["promoted"]
    # Over a champion, too: far better than the champion, still at the majority's level.
    make_run(tmp_path, "20260103T000000Z-c", {"cat": 0.9, "dog": 0.9}, majority=0.88)
    assert not promote(tmp_path, "20260103T000000Z-c", floor)["promoted"]
    assert read_champion(tmp_path)["run_id"] == "20260102T000000Z-b"


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
@pytest.mark.slow  # promotes from two processes at once
def test_two_promotions_at_once_keep_the_pointer_consistent(tmp_path, attempt):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    promote(tmp_path, "20260101T000000Z-a", RULES)
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.8, "dog": 0.8})
    make_run(tmp_path, "20260102T000000Z-c", {"cat": 0.9, "dog": 0.9})
    workers = [subprocess.Popen([sys.executable, "-c", PROMOTE_IN_A_PROCESS, str(tmp_path), run_id])
               for run_id in ("20260102T000000Z-b", "20260102T000000Z-c")]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    champion = read_champion(tmp_path)
    b, c = (json.loads(RunDir(tmp_path / f"20260102T000000Z-{x}").promotion.read_text()) for x in "bc")
    # Whatever the order, C (the best) ends as champion, and the later decision saw the earlier one.
    assert champion["run_id"] == "20260102T000000Z-c" and c["promoted"]
    if b["promoted"]:
        assert c["champion_before"] == "20260102T000000Z-b" and champion["previous"] == "20260102T000000Z-b"
    else:
        assert b["champion_before"] == "20260102T000000Z-c"
    assert [row["run_id"] for row in list_runs(tmp_path) if row["champion"]] == ["20260102T000000Z-c"]


def test_a_promotion_waits_for_one_paused_inside_the_lock(tmp_path, monkeypatch):
    """B pauses between reading and writing the pointer until C is blocked on the lock (or, with no lock,
    has judged too): without the lock both judge against A and C's decision misses B."""
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    promote(tmp_path, "20260101T000000Z-a", RULES)
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.8, "dog": 0.8})
    make_run(tmp_path, "20260102T000000Z-c", {"cat": 0.9, "dog": 0.9})
    b_inside, c_blocked_or_inside = threading.Event(), threading.Event()
    judge, hold_lock = mmpipe.evaluate.promote._judge, mmpipe.runs.store.hold_lock

    def judge_pausing_b(runs_dir, ours, champion, config):
        if ours["run_id"] == "20260102T000000Z-b":
            b_inside.set()
            assert c_blocked_or_inside.wait(timeout=30), "C neither waited on the lock nor got past it"
        else:
            c_blocked_or_inside.set()
        return judge(runs_dir, ours, champion, config)

    def hold_lock_saying_when_blocked(path, on_wait=None, shared=False):
        return hold_lock(path, on_wait=c_blocked_or_inside.set, shared=shared)

    monkeypatch.setattr(mmpipe.evaluate.promote, "_judge", judge_pausing_b)
    monkeypatch.setattr(mmpipe.runs.store, "hold_lock", hold_lock_saying_when_blocked)
    errors = []

    def promote_in_a_thread(run_id):
        try:
            promote(tmp_path, run_id, RULES)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    b = threading.Thread(target=promote_in_a_thread, args=("20260102T000000Z-b",))
    b.start()
    assert b_inside.wait(timeout=30), "B never reached the locked section"
    c = threading.Thread(target=promote_in_a_thread, args=("20260102T000000Z-c",))
    c.start()
    for thread in (b, c):
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert errors == []
    decision = json.loads(RunDir(tmp_path / "20260102T000000Z-c").promotion.read_text())
    assert decision["promoted"] and decision["champion_before"] == "20260102T000000Z-b"
    champion = read_champion(tmp_path)
    assert champion["run_id"] == "20260102T000000Z-c" and champion["previous"] == "20260102T000000Z-b"
