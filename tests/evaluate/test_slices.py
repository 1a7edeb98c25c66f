"""Slicing on real shards: every dimension covers each row once; a manifest's own columns slice too."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmpipe.errors import EvaluationError
from mmpipe.evaluate.slices import size_bucket, slice_metrics, words_bucket
from mmpipe.ingest import ingest
from mmpipe.ingest.version import load_dataset
from mmpipe.train.inputs import split_paths
from tests.fixtures.datasets import make_config
from tests.fixtures.files import distinct_images, write_manifest


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    """An ingested dataset whose manifest has a `region` column, every row in the test split."""
    root = tmp_path_factory.mktemp("regional")
    names = distinct_images(root / "src", 12, seed=5)
    rows = [{"text": " ".join(["word"] * (i + 1)), "image": name, "label": ("cat", "dog")[i % 2],
             "split": "test", "region": ("north", "south", "east")[i % 3], "flash": i < 4}
            for i, name in enumerate(names)]
    ingest(write_manifest(root / "src" / "m.jsonl", rows), make_config(root / "data"))
    return load_dataset(root / "data")


def _scored(version, slice_by, right_when, min_rows=4):
    """Predictions that are right exactly on the rows `right_when(shard row)` picks."""
    table = pq.read_table(split_paths(version, "test")[0])
    rows = table.to_pylist()
    classes = ["cat", "dog"]
    labels = np.array([classes.index(row["label"]) for row in rows])
    guesses = np.where([right_when(row) for row in rows], labels, 1 - labels)
    probabilities = np.eye(2)[guesses] * 0.8 + 0.1
    return slice_metrics(version, "test", [row["id"] for row in rows], labels, probabilities, classes,
                         slice_by=slice_by, min_rows=min_rows, ece_bins=10)


def test_a_manifest_column_slices_the_metrics(regional):
    sliced = _scored(regional, ["region"], lambda row: json.loads(row["extra"])["region"] == "north")
    assert {entry["value"]: (entry["n"], entry["accuracy"]) for entry in sliced["region"]} == {
        "north": (4, 1.0), "south": (4, 0.0), "east": (4, 0.0)}
    assert all(not entry["small"] for entry in sliced["region"])
    assert [entry["value"] for entry in sliced["text_words"]] == ["1-2 words", "3-5 words", "6-15 words"]
    assert [entry["n"] for entry in sliced["text_words"]] == [2, 3, 7]
    # Under 4 rows and at most half of an even share (12 rows / 3 slices / 2): only the 2-row slice is rare.
    assert [entry["small"] for entry in sliced["text_words"]] == [True, False, False]
    assert all(entry["macro_f1"] is None for entry in sliced["class"])


def test_an_evenly_split_small_test_set_is_not_all_flagged_small_and_says_how_sure_each_slice_is(regional):
    """Two classes of 6 test rows under the default 30: neither is rarer than the other, so neither is flagged;
    how little 6 rows say is each slice's accuracy interval."""
    sliced = _scored(regional, [], lambda row: row["label"] == "cat" or row["text"].count("word") > 10, min_rows=30)
    assert [(entry["value"], entry["n"], entry["small"]) for entry in sliced["class"]] == [
        ("cat", 6, False), ("dog", 6, False)]
    assert [entry["small"] for entry in sliced["text_words"]] == [True, False, False]  # 2 of 12 rows: rare
    cat, dog = sliced["class"]
    assert cat["accuracy"] == 1.0 and dog["accuracy"] == pytest.approx(1 / 6)
    # Wilson's 95% interval of 6/6 and 1/6 (scipy's binomtest gives the same; values from the formula):
    assert cat["accuracy_interval"] == pytest.approx([0.6097, 1.0], abs=1e-4)
    assert dog["accuracy_interval"] == pytest.approx([0.0301, 0.5635], abs=1e-4)


def test_json_values_slice_as_the_manifest_wrote_them(regional):
    sliced = _scored(regional, ["flash"], lambda row: True)
    assert {entry["value"]: entry["n"] for entry in sliced["flash"]} == {"true": 4, "false": 8}


def test_a_column_nobody_has_is_named_with_the_columns_there_are(regional):
    with pytest.raises(EvaluationError, match=r"slice_by names colour.*its columns: .*region"):
        _scored(regional, ["colour"], lambda row: True)


def test_buckets():
    assert [size_bucket(n) for n in (8, 16, 31, 32, 100, 4000)] == [
        "under 16 px", "16-31 px", "16-31 px", "32-63 px", "64-127 px", "1024 px and over"]
    assert [words_bucket(n) for n in (0, 1, 2, 3, 15, 16, 51)] == [
        "no words", "1-2 words", "1-2 words", "3-5 words", "6-15 words", "16-50 words", "over 50 words"]
