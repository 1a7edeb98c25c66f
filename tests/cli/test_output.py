"""What commands print: counts in the right number, from the summaries the flows return."""

from mmpipe.cli.output import print_ingest_summary, print_pipeline_summary, warnings_of

INGEST = {"dataset_version": "v1", "data_dir": "/data", "rows_read": 1, "accepted": 0, "duplicates": 1,
          "quarantined": {}, "splits": {"train": 0, "val": 0, "test": 0}, "classes": []}


def test_one_duplicate_is_one_duplicate(capsys):
    print_ingest_summary(INGEST)
    out = capsys.readouterr().out
    assert "1 row read: 0 accepted, 0 quarantined, 1 duplicate\n" in out
    print_ingest_summary({**INGEST, "rows_read": 5, "accepted": 3, "duplicates": 2})
    assert "5 rows read: 3 accepted, 0 quarantined, 2 duplicates\n" in capsys.readouterr().out


def test_the_pipeline_summary_counts_in_words_and_names_the_validation_page(capsys):
    validation = {"warnings": [{"expectation": "x"}], "page": "/data/validation/v1/index.html",
                  "contracts": {"source": {"files": {}, "dir": "/data/contracts", "origin": "none yet"}}}
    print_pipeline_summary({"dataset_version": "v1", "ingest": {**INGEST, "accepted": 1}, "validation": validation,
                            "metrics": {"accuracy": 1.0, "macro_f1": 1.0}, "promotion": None, "run_id": "r",
                            "report": "/runs/r/report.html"})
    out = capsys.readouterr().out
    assert "dataset v1: 1 row accepted, 0 quarantined, 1 duplicate; contracts passed (1 warning)" in out
    assert "validation page: /data/validation/v1/index.html" in out
    assert [warnings_of({"warnings": []}), warnings_of({"warnings": [1, 2]})] == ["no warnings", "2 warnings"]


def test_the_progress_bar_names_each_stage_and_a_stage_without_counts_drops_the_last_total(monkeypatch):
    import logging
    import sys

    from flows.ingest import PROGRESS_EXTRA
    from mmpipe.cli.output import ProgressBar

    def said(what):  # a flow's progress record, as its run logger hands it to the bar's handler
        return logging.makeLogRecord({"msg": "progress", PROGRESS_EXTRA: what})

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # the bar a terminal shows
    with ProgressBar("Pipeline", quiet=False) as bar:
        bar.handler.handle(said((3, 10, "cleaning chunks")))
        (task,) = bar.progress.tasks
        assert (task.description, task.completed, task.total) == ("Pipeline: cleaning chunks", 3, 10)
        bar.handler.handle(said((0, None, "evaluating on the test split")))
        (task,) = bar.progress.tasks
        assert (task.description, task.completed, task.total) == ("Pipeline: evaluating on the test split", 0, None)
