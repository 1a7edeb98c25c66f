"""run.json and the run dir layout: one load/save, versioned, damaged files named."""

import json

import pytest

from mmpipe.errors import RunStoreError
from mmpipe.runs.record import RUN_FORMAT, RunDir, RunRecord, load_record
from tests.fixtures.runs import make_run


def test_a_record_round_trips_and_knows_its_config(tmp_path):
    run = RunDir(make_run(tmp_path, "20260101T000000Z-a", None, epochs=4))
    record = load_record(run)
    assert record.format == RUN_FORMAT and record.run_config.train.epochs == 4
    record.history = [{"epoch": 1, "loss": 0.5}]
    record.save(run)
    assert load_record(run) == record
    assert json.loads(run.record.read_text())["history"] == [{"epoch": 1, "loss": 0.5}]


def test_every_file_of_a_run_dir_has_one_name(tmp_path):
    run = RunDir(tmp_path / "r")
    paths = [run.record, run.metrics, run.promotion, run.model, run.predictions, run.report, run.confusion_matrix,
             run.history, run.logs, run.checkpoints, run.serving]
    assert len({path.name for path in paths}) == len(paths) and all(path.parent == run.path for path in paths)
    assert run.checkpoint(3).name == "epoch-003.keras" and run.evaluation("v2", "val").name == "v2-val"


@pytest.mark.parametrize(("content", "message"), [
    ("", "cannot read"), ("{not json", "cannot read"), ("[]", "not a JSON object"),
    ('{"run_id": "x"}', "is damaged"), ('{"format": 99}', "newer mmpipe")])
def test_a_damaged_record_is_named_not_a_traceback(tmp_path, content, message):
    run = RunDir(tmp_path / "20260101T000000Z-a")
    run.path.mkdir()
    run.record.write_text(content)
    with pytest.raises(RunStoreError, match=message) as raised:
        load_record(run)
    assert str(run.record) in str(raised.value) or "newer" in message


def test_a_missing_run_says_how_to_list_the_runs(tmp_path):
    with pytest.raises(RunStoreError, match="runs list"):
        load_record(RunDir(tmp_path / "nope"))


def test_an_unknown_field_is_refused(tmp_path):
    with pytest.raises(ValueError):
        RunRecord(run_id="x", variant="fused", seed=1, dataset_version="v", data_dir="d", classes=[], config={},
                  config_hash="h", code_version="0", started_at="t", colour="blue")
