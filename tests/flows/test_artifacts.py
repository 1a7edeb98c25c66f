"""Artifact keys: one history per source in the Prefect UI, whatever the sources are called."""

import json

import pytest
from prefect.types.names import raise_on_name_alphanumeric_dashes_only

from flows.artifacts import EVALUATION_METRICS, EVALUATION_REPORT, EVALUATION_REPORT_FILE, artifact_key
from mmpipe.ingest.version import DATASET_FILE


def data_dir_of(tmp_path, name: str, source: str):
    """A data dir whose dataset.json says it was built from `source` (all a key reads of it)."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / DATASET_FILE).write_text(json.dumps({"source": {"path": source, "kind": "manifest"}}))
    return folder


@pytest.mark.parametrize("source, readable", [
    ("/data/shop/manifest.csv", "shop-manifest-csv"),
    ("/data/Product Photos/", "product-photos"),
    ("s3://bucket/incoming/feed.jsonl", "incoming-feed-jsonl"),
    ("s3://bucket", "bucket"),
    ("/data/" + "é" * 40, ""),  # nothing readable is left: the hash alone names it
])
def test_a_key_is_a_valid_prefect_key_that_names_the_source(tmp_path, source, readable):
    key = artifact_key(EVALUATION_METRICS, data_dir_of(tmp_path, "data", source))
    assert raise_on_name_alphanumeric_dashes_only(key) == key
    assert key.startswith(f"{EVALUATION_METRICS}-{readable}-" if readable else f"{EVALUATION_METRICS}-")
    assert len(key) <= len(EVALUATION_METRICS) + 1 + 32 + 1 + 8


def test_two_sources_never_share_a_history_even_with_one_name(tmp_path):
    first = data_dir_of(tmp_path, "a", "/srv/team-a/photos")
    second = data_dir_of(tmp_path, "b", "/srv/team-b/photos")  # same folder name, another source
    for name in (EVALUATION_METRICS, EVALUATION_REPORT, EVALUATION_REPORT_FILE):
        assert artifact_key(name, first) != artifact_key(name, second)
    # Every stage of one source shares its suffix; a data dir moved along with its dataset keeps it.
    again = data_dir_of(tmp_path, "moved", "/srv/team-a/photos")
    assert artifact_key(EVALUATION_METRICS, again) == artifact_key(EVALUATION_METRICS, first)
    assert artifact_key(EVALUATION_REPORT, first).removeprefix(EVALUATION_REPORT) == \
        artifact_key(EVALUATION_METRICS, first).removeprefix(EVALUATION_METRICS)


def test_a_data_dir_that_does_not_say_its_source_is_named_by_itself(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    key = artifact_key(EVALUATION_METRICS, tmp_path / "x")
    assert key.startswith(f"{EVALUATION_METRICS}-x-") and key != artifact_key(EVALUATION_METRICS, tmp_path / "y")
