"""Scoring new data with a trained run: every row scored or quarantined, the evaluation's predictions, drift
that fires on darkened images and not on the training data itself, a scoring reused only while its files hold."""

import csv
import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmpipe.config import EvaluateConfig
from mmpipe.evaluate import evaluate_run
from mmpipe.ingest.version import load_dataset
from mmpipe.ingest.workers import chunk_workers
from mmpipe.runs.record import RunDir, load_record
from mmpipe.score import score_source
from mmpipe.score.output import complete_scoring
from mmpipe.score.runner import ScoreSteps
from tests.fixtures.datasets import SAMPLE_CLASSES, make_config
from tests.fixtures.files import darkened_copy

pytestmark = pytest.mark.slow  # loads a trained model


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory):
    """An evaluated copy of the session's trained run (its predictions are what scoring must repeat); the tests
    add only their drift reference to it, the same each time."""
    run = tmp_path_factory.mktemp("scoring") / "runs" / trained_run.name
    shutil.copytree(trained_run, run)
    evaluate_run(run, EvaluateConfig())
    return run


def scoring_config(tmp_path, **overrides):
    return make_config(tmp_path / "data", **{"score.out_dir": str(tmp_path / "scores"), **overrides})


def manifest_rows(manifest):
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_row_is_scored_or_quarantined_and_scores_as_its_evaluation(run_dir, sample_manifest, tmp_path):
    scoring = score_source(sample_manifest, run_dir, scoring_config(tmp_path))
    assert scoring["rows_read"] == len(manifest_rows(sample_manifest))
    assert scoring["rows_read"] == scoring["scored"] + sum(scoring["quarantined"].values())
    # The sample's broken files are quarantined with ingest's reasons, never scored; its labels are not judged.
    assert {"image_unreadable", "image_missing", "path_outside_root"} <= set(scoring["quarantined"])
    assert not {"label_missing", "label_unknown"} & set(scoring["quarantined"])
    predictions = pq.read_table(scoring["predictions"][0]).to_pandas()
    quarantine = pq.read_table(f"{scoring['out_dir']}/quarantine.parquet")
    assert len(predictions) == scoring["scored"] and quarantine.num_rows == sum(scoring["quarantined"].values())
    assert set(quarantine["source"].to_pylist()) and all(quarantine["detail"].to_pylist())
    probabilities = predictions[[f"probability_{name}" for name in load_record(RunDir(run_dir)).classes]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert (predictions["confidence"].to_numpy() == probabilities.max(axis=1)).all()
    assert set(predictions["run_id"]) == {run_dir.name}
    # The run's own evaluation scored its test rows: the same rows get the same probabilities here.
    evaluated = pq.read_table(RunDir(run_dir).predictions).to_pandas().set_index("id")
    scored = predictions.drop_duplicates("id").set_index("id").loc[evaluated.index]
    assert (scored["predicted"] == evaluated["predicted"]).all()
    assert np.allclose(scored[[f"probability_{name}" for name in load_record(RunDir(run_dir)).classes]].to_numpy(),
                       np.stack(evaluated["probabilities"].to_numpy()), atol=1e-5)
    # Labels were given: the metrics are the evaluation's own, on the labelled rows the model knows.
    labelled = predictions[predictions["label"].isin(SAMPLE_CLASSES)]
    assert scoring["metrics"]["rows"] == len(labelled)
    assert scoring["metrics"]["accuracy"] == pytest.approx((labelled["label"] == labelled["predicted"]).mean())
    assert scoring["unknown_labels"] == int((~predictions["label"].isin(SAMPLE_CLASSES)
                                             & predictions["label"].notna()).sum())
    # Scored again: the same scoring, found complete and reused, not redone.
    again = score_source(sample_manifest, run_dir, scoring_config(tmp_path))
    assert again["reused"] and again["version"] == scoring["version"]


def test_the_training_data_does_not_drift_and_darkened_images_do(run_dir, sample_manifest, tmp_path):
    same = score_source(sample_manifest, run_dir, scoring_config(tmp_path))
    assert not same["drift"]["detected"], same["drift"]
    assert {"text_chars", "brightness", "colourfulness", "image_side", "image_format", "predicted"} <= set(
        same["drift"]["features"])
    # Kept in the run (the data dir may move on): the train split, and for unknown words the held-out splits
    # (the vocabulary was fitted on the train split, where every word is known by construction).
    kept = json.loads((RunDir(run_dir).path / "drift_reference.json").read_text())["features"]
    version = load_dataset(load_record(RunDir(run_dir)).data_dir)
    assert len(kept["brightness"]) == version.rows_of("train")
    assert len(kept["oov_rate"]) == version.rows_of("val") + version.rows_of("test")
    # Sliced by `group` (the sample has none: one slice, "(missing)"), the slice drifts as the whole does.
    darkened = score_source(darkened_copy(sample_manifest, tmp_path / "dark"), run_dir,
                            scoring_config(tmp_path, **{"evaluate.slice_by": ["group"]}))
    assert darkened["drift"]["slices"]["group"]["(missing)"]["features"]["brightness"]["drifted"]
    assert darkened["drift"]["detected"]
    assert darkened["drift"]["features"]["brightness"]["drifted"], darkened["drift"]
    assert not darkened["drift"]["features"]["text_chars"]["drifted"]  # the texts did not change
    page = Path(darkened["report"]).read_text()
    assert "Drift: detected" in page and "<tr class=small><td>brightness</td><td>ks</td>" in page
    assert '<img alt="drift per feature" src="data:image/png;base64,' in page  # the chart, inside the page


def test_unlabelled_data_is_scored_without_metrics(run_dir, sample_manifest, tmp_path):
    rows = manifest_rows(sample_manifest)[:20]
    unlabelled = sample_manifest.parent / "unlabelled.csv"
    with open(unlabelled, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["text", "image", "region"])
        writer.writeheader()
        writer.writerows({"text": row["text"], "image": row["image"], "region": ("north", "south")[i % 2]}
                         for i, row in enumerate(rows))
    try:
        scoring = score_source(unlabelled, run_dir, scoring_config(tmp_path))
    finally:
        unlabelled.unlink()
    assert scoring["metrics"] is None and scoring["rows_read"] == 20
    predictions = pq.read_table(scoring["predictions"][0]).to_pandas()
    assert predictions["label"].isna().all() and set(predictions["region"]) <= {"north", "south"}
    assert "drift not judged" in scoring["drift"]["note"]  # fewer rows than score.drift_min_rows


def test_a_scoring_whose_files_changed_is_not_reused_and_a_killed_one_redoes_only_what_it_lacks(
        run_dir, sample_manifest, tmp_path):
    config = scoring_config(tmp_path, **{"ingest.chunk_rows": 8})
    first = score_source(sample_manifest, run_dir, config)
    predictions = first["predictions"][0]
    pq.write_table(pq.read_table(predictions).slice(0, 3), predictions)  # a file that is not what was written
    assert complete_scoring(tmp_path / "scores" / first["version"]) is None
    shutil.rmtree(first["out_dir"])  # as if killed before the folder was renamed into place ...
    left = tmp_path / "scores" / f".{first['version']}.tmp-{2**22 + 12345}"  # ... by a process now gone
    left.mkdir()
    chunks = []
    again = score_source(sample_manifest, run_dir, config, on_chunk=lambda done, total, result: chunks.append(result))
    assert not again["reused"] and all(result.cached for result in chunks) and len(chunks) > 2
    assert not left.exists()  # what the killed scoring left is removed by the next
    assert pq.read_table(again["predictions"][0]).num_rows == again["scored"] == first["scored"]
    assert json.loads((tmp_path / "scores" / again["version"] / "scoring.json").read_text())["files"]


def test_a_long_scoring_cleans_on_worker_processes_and_scores_as_one_on_threads(run_dir, sample_manifest, tmp_path,
                                                                               monkeypatch):
    """Enough chunks to pay for a process pool's start: cleaned on worker processes, the same predictions."""
    from mmpipe.score import runner

    kinds = []
    monkeypatch.setattr(runner, "chunk_workers", lambda count, kind: kinds.append(kind) or chunk_workers(count, kind))
    two_workers = ScoreSteps(score=partial(runner.score_in_order, workers=2))
    short = score_source(sample_manifest, run_dir, scoring_config(tmp_path / "short"), two_workers)
    long = score_source(sample_manifest, run_dir, scoring_config(tmp_path / "long", **{"ingest.chunk_rows": 4}),
                        two_workers)
    assert kinds == ["threads", "processes"]
    assert len(long["lineage"]["chunks"]) >= 2 * runner.PROCESSES_FROM_CHUNKS_PER_WORKER
    assert (long["scored"], long["quarantined"]) == (short["scored"], short["quarantined"])
    # In the source's order either way: chunks are written in order, whichever worker cleaned them.
    on_threads, on_processes = (pq.read_table(scoring["predictions"][0]).to_pandas() for scoring in (short, long))
    assert on_threads["id"].tolist() == on_processes["id"].tolist()
    assert (on_threads["predicted"].to_numpy() == on_processes["predicted"].to_numpy()).all()
    assert np.allclose(on_threads["confidence"], on_processes["confidence"], atol=1e-6)


def test_the_reference_is_kept_when_the_run_is_evaluated_so_drift_outlives_the_data(trained_run, sample_manifest,
                                                                                    tmp_path):
    """A champion kept while the data dir moved on (its challenger lost) still has what it learned from."""
    data = tmp_path / "data-then"
    shutil.copytree(load_record(RunDir(trained_run)).data_dir, data)
    run = RunDir(tmp_path / "runs" / trained_run.name)
    shutil.copytree(trained_run, run.path)
    load_record(run).model_copy(update={"data_dir": str(data)}).save(run)
    evaluate_run(run.path, EvaluateConfig())
    assert json.loads((run.path / "drift_reference.json").read_text())["dataset_version"] == \
        load_record(run).dataset_version
    shutil.rmtree(data)  # the data dir moved on
    # Asked for a reference of another size: the one kept (of the very rows the run learned from) stands in.
    scoring = score_source(sample_manifest, run.path, scoring_config(tmp_path, **{"score.reference_rows": 123}))
    assert "not judged" not in scoring["drift"]["note"], scoring["drift"]["note"]
    assert not scoring["drift"]["detected"] and "brightness" in scoring["drift"]["features"]
