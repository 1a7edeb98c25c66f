"""`mmpipe runs ...` on written run dirs: what a user reads, and the JSON scripts read."""

import json

from typer.testing import CliRunner

from mmpipe.cli import app
from tests.fixtures.runs import make_run

runner = CliRunner()


def test_runs_compare_shows_metric_class_and_config_changes(tmp_path):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    make_run(tmp_path, "20260102T000000Z-b", {"cat": 0.8, "dog": 0.5}, epochs=3)
    runs = ["--runs", str(tmp_path)]
    shown = runner.invoke(app, ["runs", "compare", "20260101T000000Z-a", "20260102T000000Z-b", *runs])
    assert shown.exit_code == 0, shown.output
    assert "20260102T000000Z-b vs 20260101T000000Z-a" in shown.stdout
    assert "F1 cat" in shown.stdout and "+0.2000" in shown.stdout and "-0.1000" in shown.stdout
    assert "config train.epochs: 1 -> 3" in shown.stdout
    diff = json.loads(runner.invoke(app, ["runs", "compare", "20260101T000000Z-a", "20260102T000000Z-b", *runs,
                                          "--json"]).stdout)
    assert diff["per_class_f1"]["cat"]["delta"] == 0.2 and diff["config"] == {"train.epochs": {"a": 1, "b": 3}}


def test_runs_list_says_where_it_looked_when_there_are_none(tmp_path):
    shown = runner.invoke(app, ["runs", "list", "--runs", str(tmp_path / "none")])
    assert shown.exit_code == 0 and "no runs" in shown.stdout
