"""A search on tiny real data, through the `tune` flow on a real Prefect server: each trial an ordinary run, the
median pruner ending a hopeless one (`pruned`, not failed), the best run evaluated on test once and judged; a
search killed halfway resumes its study (the killed trial's run resumed, not retrained); two processes share one
study without running a trial twice or more trials than asked."""

import asyncio
import json
import os
import shutil
import signal

import numpy as np
import pytest

from mmpipe.config import load_config
from mmpipe.files import FAULT_ENV
from mmpipe.runs.record import RunDir, load_record
from mmpipe.runs.store import list_runs, read_champion
from mmpipe.tune.results import chosen_trial, trial_rows
from mmpipe.tune.study import load_study, plan_search, run_trials, search_lock
from tests.fixtures.cli import documented_json_keys, run_main
from tests.fixtures.datasets import SAMPLE_CLASSES, SMALL_SAMPLE_CONTRACTS, TINY_MODEL, artifact
from tests.fixtures.forked import Forker

# Trial 0 is the configuration as set; then one learning rate that learns in 4 epochs and one that cannot. Two
# trials always run whole (prune_after_trials), so the third is judged against them from its first epoch.
GOOD_RATE, HOPELESS_RATE = 3e-2, 1e-6
SPACE_OF_TUNE = {"model": {"learning_rate": {"low": 1e-6, "high": 5e-2, "log": True}}}
TUNE = {"train.epochs": 4, "tune.trials": 3, "tune.prune_after_trials": 2, "tune.prune_warmup_epochs": 0,
        "tune.random_trials": 1, "tune.space": SPACE_OF_TUNE}
SEARCH = """
import json, sys
from mmpipe.config import load_config
from mmpipe.tune.study import load_study, plan_search, run_trials, search_lock
search = plan_search(load_config(None, json.loads(sys.argv[1]), environ={}))
with search_lock(search):
    study = load_study(search)
    if len(study.trials) == 1:  # a new study: its first trial, the configuration as set, is queued
        for rate in json.loads(sys.argv[2]):
            study.enqueue_trial({"model.learning_rate": rate})
for outcome in run_trials(search):
    print(json.dumps(outcome), flush=True)
"""


def settings(data_dir, runs_dir, **overrides) -> dict:
    """The tiny model's config for a search (tests/fixtures/datasets.run_config's, as plain settings)."""
    return {"data_dir": str(data_dir), "runs_dir": str(runs_dir), "image.size": 16, "ingest.chunk_rows": 8,
            "ingest.classes": SAMPLE_CLASSES, "train.export_serving": False, "evaluate.min_gain_over_majority": -1,
            **SMALL_SAMPLE_CONTRACTS, **TINY_MODEL, **TUNE, **overrides}


@pytest.fixture(scope="module")
def tuning_data(tmp_path_factory):
    """240 rows of the sample (16 px), ingested and validated: enough validation rows to tell learning apart."""
    from mmpipe.contracts.validate import validate_dataset
    from mmpipe.ingest import ingest
    from mmpipe.sample import SampleSpec, write_sample

    root = tmp_path_factory.mktemp("tuning")
    manifest = write_sample(root / "sample", SampleSpec(rows=240, seed=3, min_side=8, max_side=16, fault_rate=0.0))
    config = load_config(None, settings(root / "data", root / "runs"), environ={})
    ingest(manifest, config)
    assert validate_dataset(root / "data", config).success
    return root / "data"


@pytest.fixture(scope="module")
def searched(prefect_api, tuning_data, tmp_path_factory):
    """The 3-trial search through the `tune` flow, every commit point it passed logged (where to kill it below)."""
    from flows.tune import tune_flow

    root = tmp_path_factory.mktemp("searched")
    config = load_config(None, settings(tuning_data, root / "runs"), environ={})
    search = plan_search(config)
    with search_lock(search):
        load_study(search).enqueue_trial({"model.learning_rate": GOOD_RATE})
        load_study(search).enqueue_trial({"model.learning_rate": HOPELESS_RATE})
    os.environ[FAULT_ENV] = f"log:{root / 'commits.log'}"
    try:
        state = tune_flow(config, return_state=True)
    finally:
        del os.environ[FAULT_ENV]
    return search, state, (root / "commits.log").read_text().splitlines()


@pytest.mark.slow(seconds=45)
def test_a_search_trains_runs_prunes_the_hopeless_one_and_judges_the_best(searched, monkeypatch, capsys):
    search, state, _ = searched
    summary = state.result()
    rows = trial_rows(load_study(search), search.parameters)
    assert [row["model.learning_rate"] for row in rows] == [2e-3, GOOD_RATE, HOPELESS_RATE]  # config first
    assert [row["state"] for row in rows] == ["completed", "completed", "pruned"]
    assert rows[2]["epochs"] < 4 and rows[0]["epochs"] == rows[1]["epochs"] == 4
    runs = {row["trial"]: load_record(RunDir(search.runs_dir / row["run_id"])) for row in rows}
    assert [runs[number].status for number in (0, 1, 2)] == ["completed", "completed", "pruned"]
    assert "pruned by study" in runs[2].error and len(runs[2].history) == rows[2]["epochs"]
    for number, record in runs.items():  # each an ordinary run that says what it is
        assert record.study == {"name": search.name, "trial": number,
                                "params": {"model.learning_rate": rows[number]["model.learning_rate"]}}
        assert record.config["model"]["learning_rate"] == rows[number]["model.learning_rate"]
        assert not RunDir(search.runs_dir / record.run_id).checkpoints.exists()  # finished: never resumed
    chosen, choice = chosen_trial(load_study(search), search.config.tune.min_confidence, search.config.seed)
    best = rows[chosen.number]
    assert best["state"] == "completed" and summary["choice"] == choice  # (the rule: tests/tune/test_results.py)
    assert summary["best"]["run_id"] == best["run_id"] and summary["best"]["val_macro_f1"] == best["val_macro_f1"]
    assert (summary["trials"], summary["completed"], summary["pruned"], summary["failed"]) == (3, 2, 1, 0)
    assert set(summary) == documented_json_keys("mmpipe tune")  # what `mmpipe tune --json` prints
    # The test split touched once, by the best run alone, which then went through promotion.
    evaluated = [row["run_id"] for row in rows if RunDir(search.runs_dir / row["run_id"]).metrics.exists()]
    assert evaluated == [best["run_id"]]
    assert summary["promotion"]["promoted"] and read_champion(search.runs_dir)["run_id"] == best["run_id"]
    listed = {row["run_id"]: row for row in list_runs(search.runs_dir)}
    assert {row["run_id"]: (listed[row["run_id"]]["study"], listed[row["run_id"]]["trial"]) for row in rows} == {
        row["run_id"]: (search.name, row["trial"]) for row in rows}
    code, out, _ = run_main(["runs", "list", "--runs", str(search.runs_dir)], monkeypatch, capsys)
    lines = out.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith(f"  study {search.name}: 3 trial runs"))
    assert code == 0 and [line.split()[-5] for line in lines[header + 1:]] == ["completed", "completed", "pruned"]
    assert [f"#{number}" in lines[header + 1 + number] for number in (0, 1, 2)] == [True] * 3
    # Again: the study holds its trials, so no trial trains and the test split is not scored a second time.
    from flows.tune import tune_flow

    metrics_written = RunDir(search.runs_dir / best["run_id"]).metrics.stat().st_mtime_ns
    again = tune_flow(search.config)
    assert again["best"] == summary["best"] and again["trials"] == 3
    assert RunDir(search.runs_dir / best["run_id"]).metrics.stat().st_mtime_ns == metrics_written


@pytest.mark.slow(seconds=5)
def test_the_study_is_in_the_ui(searched):
    from flows.artifacts import TUNING_CHART, TUNING_STUDY, TUNING_TRIALS, artifact_key

    search, state, _ = searched
    flow_run = state.state_details.flow_run_id
    key = lambda name: artifact_key(name, search.config.data_dir)  # noqa: E731
    trials = asyncio.run(artifact(flow_run, key(TUNING_TRIALS)))
    assert [row["state"] for row in json.loads(trials.data)] == ["completed", "completed", "pruned"]
    study = asyncio.run(artifact(flow_run, key(TUNING_STUDY)))
    assert search.name in study.data and "validation macro F1" in study.data
    for chart in ("history", "epochs", "importance"):
        image = asyncio.run(artifact(flow_run, key(f"{TUNING_CHART}-{chart}")))
        assert image is not None and image.data.startswith("data:image/png;base64,"), chart


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    forker = Forker(["mmpipe.tune.study", "mmpipe.tune.results", "tensorflow", "keras", "optuna"],
                    tmp_path_factory.mktemp("children"))
    yield forker
    forker.close()


@pytest.mark.slow(seconds=30)
def test_a_search_killed_mid_trial_resumes_its_study_and_the_trial_s_run(searched, tuning_data, children, tmp_path):
    search, _, commits = searched
    trial_one = trial_rows(load_study(search), search.parameters)[1]["run_id"]
    # The same search from nothing (trial 1 queued alone: the writes up to the kill are the same), killed -9 as
    # trial 1 commits its second epoch's checkpoint (a run's files are a function of its config and seed).
    kill_at = commits.index(next(line for line in commits if f"/{trial_one}/" in line and "epoch-002" in line)) + 1
    done = children.run(SEARCH, json.dumps(settings(tuning_data, tmp_path / "runs")), json.dumps([GOOD_RATE]),
                        fault=str(kill_at))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    records = [load_record(RunDir(path)) for path in (tmp_path / "runs").iterdir() if path.name != "tuning"]
    killed = next(record for record in records if record.study["trial"] == 1)
    assert killed.status == "running" and len(records) == 2  # its process is gone: interrupted
    # Again, for two trials: the interrupted one is not counted, so its retry runs.
    resumed_search = plan_search(load_config(None, settings(tuning_data, tmp_path / "runs", **{"tune.trials": 2}),
                                             environ={}))
    assert resumed_search.name == search.name
    outcomes = list(run_trials(resumed_search))
    assert [(outcome["trial"], outcome["state"], outcome["run_id"]) for outcome in outcomes] == [
        (2, "completed", killed.run_id)]  # the killed trial's settings again, its run resumed
    record = load_record(RunDir(tmp_path / "runs" / killed.run_id))
    assert record.status == "completed" and record.resumed_from_epoch >= 1
    rows = trial_rows(load_study(resumed_search), resumed_search.parameters)
    assert [row["state"] for row in rows] == ["completed", "interrupted", "completed"]
    assert rows[2]["retry_of"] == 1 and rows[2]["model.learning_rate"] == GOOD_RATE
    # The same run as the uninterrupted search's trial 1: same epochs, same validation scores.
    original = load_record(RunDir(search.runs_dir / trial_rows(load_study(search), search.parameters)[1]["run_id"]))
    np.testing.assert_allclose([epoch["val_macro_f1"] for epoch in record.history],
                               [epoch["val_macro_f1"] for epoch in original.history], rtol=1e-6)


@pytest.mark.slow(seconds=20)
def test_two_processes_share_one_study(tuning_data, children, tmp_path):
    """Three trials asked of two processes at once (a fork beside this one): each trial trained once, three in
    all, both at work. (An odd number: one finishes its last trial while the other still trains one, and must
    not start another: running trials count towards the study's trials.)"""
    from concurrent.futures import ThreadPoolExecutor

    values = settings(tuning_data, tmp_path / "runs", **{"tune.trials": 3, "tune.pruning": False, "train.epochs": 2})
    with ThreadPoolExecutor(1) as thread:
        other = thread.submit(children.run, SEARCH, json.dumps(values), "[]")
        search = plan_search(load_config(None, values, environ={}))
        here = list(run_trials(search))
        done = other.result(timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    there = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"trial"')]
    assert here and there, "both processes trained trials"
    assert sorted(outcome["trial"] for outcome in here + there) == [0, 1, 2]
    run_ids = {outcome["run_id"] for outcome in here + there}
    assert len(run_ids) == 3 and {path.name for path in (tmp_path / "runs").iterdir()} == run_ids | {"tuning"}
    assert [row["state"] for row in trial_rows(load_study(search), search.parameters)] == ["completed"] * 3


@pytest.mark.slow(seconds=8)
def test_settings_that_cannot_train_fail_their_trial_and_a_changed_shard_stops_the_search(tuning_data, tmp_path):
    """A trial's own failure is recorded and counted (the search goes on); an error of the data is not the trial's:
    the search stops with it, and the trial is queued again, uncounted."""
    from mmpipe.errors import TrainingError
    from mmpipe.tune.results import study_summary
    from mmpipe.tune.study import run_next_trial
    from tests.fixtures.datasets import tamper

    shutil.copytree(tuning_data, tmp_path / "data")
    values = settings(tmp_path / "data", tmp_path / "runs", **{
        "tune.trials": 1, "tune.start_with_config": False,
        "tune.space": {"model": {"conv_filters": [[4, 0]]}}})  # a layer of no filters: Keras refuses it
    search = plan_search(load_config(None, values, environ={}))
    outcomes = list(run_trials(search))
    assert [outcome["state"] for outcome in outcomes] == ["failed"] and "ValueError" in outcomes[0]["detail"]
    summary = study_summary(load_study(search), search)
    assert (summary["trials"], summary["failed"], summary["best"]) == (1, 1, None)

    more = plan_search(load_config(None, {**values, "tune.space": SPACE_OF_TUNE}, environ={}))
    tamper(tmp_path / "data", lambda table: table.slice(1), record=False)
    with pytest.raises(TrainingError, match="is not the file ingest wrote"):
        run_next_trial(more)
    rows = trial_rows(load_study(more), more.parameters)
    assert [row["state"] for row in rows] == ["interrupted", "waiting"] and rows[1]["retry_of"] == 0
    assert study_summary(load_study(more), more)["trials"] == 0
