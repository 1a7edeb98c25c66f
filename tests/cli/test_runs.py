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
    assert "20260101T000000Z-a -> 20260102T000000Z-b (each change is B - A)" in shown.stdout
    assert "own dataset's test split" not in shown.stdout  # one dataset: the deltas are the models'
    assert "F1 cat" in shown.stdout and "+0.2000" in shown.stdout and "-0.1000" in shown.stdout
    assert "config train.epochs: 1 -> 3" in shown.stdout
    diff = json.loads(runner.invoke(app, ["runs", "compare", "20260101T000000Z-a", "20260102T000000Z-b", *runs,
                                          "--json"]).stdout)
    assert diff["per_class_f1"]["cat"]["delta"] == 0.2 and diff["config"] == {"train.epochs": {"a": 1, "b": 3}}


def test_runs_compare_says_when_the_runs_were_scored_on_different_test_sets(tmp_path):
    for run_id, version in (("20260101T000000Z-a", "v1"), ("20260102T000000Z-b", "v2")):
        run = make_run(tmp_path, run_id, {"cat": 0.6, "dog": 0.6})
        for name in ("run.json", "metrics.json"):
            content = json.loads((run / name).read_text())
            (run / name).write_text(json.dumps({**content, "dataset_version": version}))
    shown = runner.invoke(app, ["runs", "compare", "20260101T000000Z-a", "20260102T000000Z-b", "--runs", str(tmp_path)])
    assert "each run was scored on its own dataset's test split (v1 -> v2)" in shown.stdout, shown.output


def test_runs_champion_names_the_previous_one_or_says_it_is_the_first(tmp_path):
    make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    pointer = {"run_id": "20260101T000000Z-a", "macro_f1": 0.6, "dataset_version": "v1",
               "promoted_at": "2026-01-01T00:00:00Z", "previous": None}
    (tmp_path / "champion.json").write_text(json.dumps(pointer))
    shown = runner.invoke(app, ["runs", "champion", "--runs", str(tmp_path)]).stdout
    assert "the first champion" in shown and "None" not in shown
    (tmp_path / "champion.json").write_text(json.dumps({**pointer, "previous": "20251231T000000Z-z"}))
    assert "previous 20251231T000000Z-z" in runner.invoke(app, ["runs", "champion", "--runs", str(tmp_path)]).stdout


def test_runs_list_and_champion_say_where_they_looked_when_there_are_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not where the runs are: the default ./mmpipe-runs does not exist
    shown = runner.invoke(app, ["runs", "list"])
    assert shown.exit_code == 0
    assert f"no runs: {tmp_path / 'mmpipe-runs'} does not exist" in shown.stdout and "--runs DIR" in shown.stdout
    champion = runner.invoke(app, ["runs", "champion"])
    assert f"no champion: {tmp_path / 'mmpipe-runs'} does not exist" in champion.stdout
    (tmp_path / "empty").mkdir()
    shown = runner.invoke(app, ["runs", "list", "--runs", str(tmp_path / "empty")])
    assert f"no runs in {tmp_path / 'empty'} yet" in shown.stdout


def test_runs_show_says_the_validation_verdict_and_git_in_words(tmp_path):
    run_dir = make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.6})
    shown = runner.invoke(app, ["runs", "show", "20260101T000000Z-a", "--runs", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "(0 shards), validation: not recorded" in shown.stdout and "git: not a git checkout" in shown.stdout
    assert "None" not in shown.stdout and "True" not in shown.stdout
    validated = tmp_path / "data" / "validation" / "v1"
    validated.mkdir(parents=True)
    (validated / "result.json").write_text("{}")
    (validated / "index.html").write_text("<!doctype html>")
    record = json.loads((run_dir / "run.json").read_text())
    record["lineage"].update(shards=[{"path": "shards/train-0.parquet"}],
                             validation={"success": True, "result": str(validated / "result.json")})
    record["git_commit"] = "abc1234"
    (run_dir / "run.json").write_text(json.dumps(record))
    shown = runner.invoke(app, ["runs", "show", "20260101T000000Z-a", "--runs", str(tmp_path)])
    assert f"dataset v1 (1 shard), validation: passed ({validated / 'index.html'})" in shown.stdout
    assert "git: abc1234" in shown.stdout


def test_runs_show_groups_metrics_in_the_report_s_words(tmp_path):
    run_dir = make_run(tmp_path, "20260101T000000Z-a", {"cat": 0.6, "dog": 0.8})
    metrics_path = run_dir / "metrics.json"
    evaluation = json.loads(metrics_path.read_text())
    evaluation["metrics"].update(top_2_accuracy=1.0, ece=0.125, log_loss=0.5, throughput_samples_per_s=812.5,
                                 latency_ms={"p50": 3.25, "p95": 4.5})
    metrics_path.write_text(json.dumps(evaluation))
    lines = runner.invoke(app, ["runs", "show", "20260101T000000Z-a", "--runs", str(tmp_path)]).stdout.splitlines()
    assert "  quality: accuracy 0.7000, top-2 accuracy 1.0000, macro F1 0.7000" in lines
    assert "  calibration (lower is better): expected calibration error 0.1250, log loss 0.5000" in lines
    assert "  speed: 812.5 rows/s, one-row latency p50 3.25 ms, one-row latency p95 4.50 ms" in lines
