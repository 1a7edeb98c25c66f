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

    from flows.progress import PROGRESS_EXTRA
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


def test_off_a_terminal_progress_is_plain_lines_one_per_stage_and_at_most_one_every_few_seconds(monkeypatch,
                                                                                                  capsys):
    import logging
    import sys

    import mmpipe.cli.output as output
    from flows.progress import PROGRESS_EXTRA

    clock = {"now": 1000.0}
    monkeypatch.setattr(output.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)  # a CI log, a file

    def said(*what, after=1.0):
        clock["now"] += after
        bar.handler.handle(logging.makeLogRecord({"msg": "progress", PROGRESS_EXTRA: what}))

    with output.ProgressBar("Pipeline", quiet=False) as bar:
        said(0, None, "ingesting")
        for chunk in range(1, 5):
            said(chunk, 4, "cleaning chunks")  # 1 s apart: the first and the last are shown
        said(0, None, "training")
        for epoch in range(1, 31):
            said(epoch, 30, f"training, epoch {epoch}/30 val_macro_f1 0.{epoch:03d}", after=2.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "Pipeline [0:01]: ingesting",
        "Pipeline [0:02]: cleaning chunks (1/4)",
        "Pipeline [0:05]: cleaning chunks (4/4)",
        "Pipeline [0:06]: training",
        "Pipeline [0:22]: training, epoch 8/30 val_macro_f1 0.008 (8/30, about 0:44 left)",
        "Pipeline [0:38]: training, epoch 16/30 val_macro_f1 0.016 (16/30, about 0:28 left)",
        "Pipeline [0:54]: training, epoch 24/30 val_macro_f1 0.024 (24/30, about 0:12 left)",
        "Pipeline [1:06]: training, epoch 30/30 val_macro_f1 0.030 (30/30)",
    ]
    # A stage whose first step is slow (the model loaded, worker processes started): the pace after it.
    with output.ProgressBar("Score", quiet=False) as bar:
        said(0, None, "reading the source")
        said(1, 94, "scoring chunks", after=10.0)
        for chunk in range(2, 18):
            said(chunk, 94, "scoring chunks")
    assert capsys.readouterr().err.splitlines()[-2:] == [
        "Score [0:11]: scoring chunks (1/94)", "Score [0:26]: scoring chunks (16/94, about 1:18 left)"]  # not 2:01
    assert all(output.PROGRESS_LINE.match(line) for line in lines)  # what tests of error lines set aside
    assert not output.PROGRESS_LINE.match("mmpipe: error: no such file")
    with output.ProgressBar("Pipeline", quiet=True) as bar:  # --json: nothing on stderr either
        assert not hasattr(bar, "handler")
    assert capsys.readouterr().err == ""
