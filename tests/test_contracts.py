"""Data contracts on real shards with the project's real suites (data_contracts/) and real GX."""

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmpipe.contracts.profile import write_starting_suites
from mmpipe.contracts.suites import read_suite
from mmpipe.contracts.validate import read_reference, validate_dataset
from mmpipe.dataset import DATASET_FILE
from mmpipe.errors import ContractFileError
from mmpipe.files import sha256_file
from tests.conftest import SAMPLE_CLASSES, make_config


@pytest.fixture
def data_dir(ingested_sample, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(ingested_sample, target)
    return target


@pytest.fixture
def contracts_config(data_dir, tmp_path):
    """The project's suites, copied so a test may edit them."""
    suites = tmp_path / "suites"
    shutil.copytree("data_contracts", suites, ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    # 49 accepted rows: a split share can be 0.1 off by chance alone.
    return make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "contracts.suites_dir": str(suites),
                                    "contracts.split_tolerance": 0.25})


def tamper(data_dir, change):
    """Rewrite the first train shard through `change(table)` and record its new hash, as a bad writer might."""
    manifest = json.loads((data_dir / DATASET_FILE).read_text())
    entry = next(e for e in manifest["shards"] if e["split"] == "train")
    path = data_dir / entry["path"]
    table = change(pq.read_table(path))
    pq.write_table(table, path)
    entry["sha256"], entry["rows"] = sha256_file(path), table.num_rows
    (data_dir / DATASET_FILE).write_text(json.dumps(manifest))
    return table


def failed_names(report):
    return {outcome.expectation: outcome for outcome in report.failed}


def test_sample_dataset_passes_and_persists_results(contracts_config, data_dir):
    report = validate_dataset(data_dir, contracts_config)
    assert report.success, report.failure_message()
    out = data_dir / "validation" / report.dataset_version
    stored = json.loads((out / "result.json").read_text())
    assert stored["success"] and len(stored["outcomes"]) == len(report.outcomes) > 20
    assert (out / "docs" / "index.html").is_file() and (out / "docs" / "dataset.html").is_file()
    page = (out / "docs" / "dataset.html").read_text()
    assert "Great Expectations" in page and "values must be unique" in page and "Succeeded" in page
    assert read_reference(data_dir)["dataset_version"] == report.dataset_version
    summary = report.summary()
    assert set(summary) == {"dataset_version", "success", "failed", "warnings", "report"}


def _relabel(table):
    labels = table["label"].to_pylist()
    labels[0] = "zebra"
    return table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))


def _duplicate_id(table):
    ids = table["id"].to_pylist()
    ids[1] = ids[0]
    return table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids))


def _shrink_images(table):
    small = pa.array([value[:300] for value in table["image"].to_pylist()], pa.binary(300))
    return table.set_column(table.schema.get_field_index("image"), "image", small)


@pytest.mark.parametrize(
    ("change", "expectation", "names_a_row"),
    [(_relabel, "expect_column_values_to_be_in_set(label)", True),
     (_duplicate_id, "expect_column_values_to_be_unique(id)", True),
     (_shrink_images, "expect_column_values_to_be_between(image_bytes)", True),
     (lambda t: t.drop_columns(["label"]), "expect_table_columns_to_match_set(table)", False),
     (lambda t: t.slice(0, 0), "expect_table_row_count_to_be_between(table)", False)],
    ids=["unknown-label", "duplicate-id", "wrong-image-size", "missing-column", "empty-shard"],
)
def test_each_critical_expectation_fails_on_a_shard_built_to_break_it(
        contracts_config, data_dir, change, expectation, names_a_row):
    original_ids = pq.read_table(data_dir / next(
        e for e in json.loads((data_dir / DATASET_FILE).read_text())["shards"] if e["split"] == "train")["path"],
        columns=["id"])["id"].to_pylist()
    tamper(data_dir, change)
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success
    failed = failed_names(report)
    assert expectation in failed, list(failed)
    outcome = failed[expectation]
    assert outcome.severity == "critical" and outcome.shards and outcome.shards[0].startswith("shards/train-")
    if names_a_row:
        assert outcome.examples and set(outcome.examples) <= set(original_ids)
    message = report.failure_message()
    assert expectation in message and "observed" in message


def test_missing_column_is_reported_on_the_expectations_that_need_it(contracts_config, data_dir):
    tamper(data_dir, lambda t: t.drop_columns(["label"]))
    outcome = failed_names(validate_dataset(data_dir, contracts_config))["expect_column_values_to_be_in_set(label)"]
    assert "label" in str(outcome.observed)


def test_a_warning_is_reported_and_does_not_fail(contracts_config, data_dir):
    reference = {"dataset_version": "older", "rows": 100, "label_weights": {"sun": 0.97, "moon": 0.01,
                 "window": 0.01, "lantern": 0.01}, "medians": {"text_length": 10.0, "image_brightness": 120.0,
                                                          "image_colourfulness": 38.0}}
    (data_dir / "validation").mkdir(exist_ok=True)
    (data_dir / "validation" / "reference.json").write_text(json.dumps(reference))
    report = validate_dataset(data_dir, contracts_config)
    assert report.success
    warned = {outcome.expectation for outcome in report.warnings}
    assert {"label distribution close to the reference", "median text_length close to the reference"} <= warned
    assert report.reference == "older"
    assert read_reference(data_dir)["dataset_version"] == "older"  # a reference is never replaced by validate


def test_unchanged_inputs_reuse_the_result_and_an_edited_suite_does_not(contracts_config, data_dir):
    first = validate_dataset(data_dir, contracts_config)
    again = validate_dataset(data_dir, contracts_config)
    assert not first.reused and again.reused and again.success
    suite_path = contracts_config.contracts.suites_dir / "shards.json"
    suite = json.loads(suite_path.read_text())
    split_check = next(e for e in suite["expectations"] if e["kwargs"].get("column") == "split")
    split_check["kwargs"]["value_set"] = ["train"]
    suite_path.write_text(json.dumps(suite))
    edited = validate_dataset(data_dir, contracts_config)
    assert not edited.reused and not edited.success
    assert "expect_column_values_to_be_in_set(split)" in failed_names(edited)


def test_shard_results_are_cached_by_shard_and_suite(contracts_config, data_dir):
    validate_dataset(data_dir, contracts_config)
    cache = sorted((data_dir / "validation" / "cache").glob("shard-*.json"))
    manifest = json.loads((data_dir / DATASET_FILE).read_text())
    assert len(cache) == len(manifest["shards"])
    tamper(data_dir, _relabel)
    validate_dataset(data_dir, contracts_config)
    assert len(list((data_dir / "validation" / "cache").glob("shard-*.json"))) == len(cache) + 1


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not readable JSON"),
     ('{"name": "s", "expectations": []}', "no \\\"expectations\\\""),
     ('{"name": "s", "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}}]}',
      "severity"),
     ('{"name": "s", "expectations": [{"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "id"},'
      ' "severity": "critical"}]}', "expectation #1 \\(expect_column_values_to_be_betwen\\)")],
    ids=["bad-json", "empty", "no-severity", "unknown-type"],
)
def test_a_malformed_suite_is_a_clear_error_not_a_silent_pass(contracts_config, data_dir, content, message):
    (contracts_config.contracts.suites_dir / "shards.json").write_text(content)
    with pytest.raises(ContractFileError, match=message):
        validate_dataset(data_dir, contracts_config)


def test_contracts_init_profiles_a_dataset_into_suites_that_pass_on_it(data_dir, tmp_path):
    out = tmp_path / "new_contracts"
    config = make_config(data_dir, **{"contracts.suites_dir": str(out), "contracts.split_tolerance": 0.25})
    paths = write_starting_suites(data_dir, config, out)
    shards = read_suite(paths[0], "shards")
    label_check = next(e for e in shards.expectations if e["kwargs"].get("column") == "label")
    assert label_check["kwargs"]["value_set"] == SAMPLE_CLASSES
    assert validate_dataset(data_dir, config).success
    with pytest.raises(ContractFileError, match="--force"):
        write_starting_suites(data_dir, config, out)


def test_project_suites_are_what_init_writes_for_the_sample():
    """The reviewed suites keep init's shape: a check per critical rule of the contract."""
    shards = read_suite(__import__("pathlib").Path("data_contracts/shards.json"), "shards")
    kinds = {(e["type"], e["kwargs"].get("column")) for e in shards.expectations if e["severity"] == "critical"}
    assert ("expect_column_values_to_be_unique", "id") in kinds
    assert ("expect_table_columns_to_match_set", None) in kinds
    assert ("expect_column_values_to_match_regex", "image_sha256") in kinds


def test_validation_never_reads_pixels(contracts_config, data_dir, monkeypatch):
    """GX sees derived columns only: reading the image column would be the known GX slow path."""
    real_read_table = pq.read_table
    columns_read = []

    def spy(path, *args, columns=None, **kwargs):
        columns_read.append(columns)
        return real_read_table(path, *args, columns=columns, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    validate_dataset(data_dir, contracts_config)
    assert columns_read and all(columns is not None and "image" not in columns for columns in columns_read)
    assert pc  # keep the compute import honest for readers of the tamper helpers


def test_an_empty_dataset_fails_with_a_report_not_a_crash(contracts_config, data_dir):
    manifest = json.loads((data_dir / DATASET_FILE).read_text())
    manifest["shards"] = []
    (data_dir / DATASET_FILE).write_text(json.dumps(manifest))
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success and "every class present" in failed_names(report)


def test_contracts_use_the_settings_the_dataset_was_built_with(contracts_config, data_dir):
    other = contracts_config.model_copy(update={"image": contracts_config.image.model_copy(update={"size": 64})})
    assert validate_dataset(data_dir, other).success  # 16 px shards are right for a 16 px dataset


def test_the_same_image_in_two_shards_is_caught_dataset_wide(contracts_config, data_dir):
    manifest = json.loads((data_dir / DATASET_FILE).read_text())
    val = next(e for e in manifest["shards"] if e["split"] == "val")
    borrowed = pq.read_table(data_dir / val["path"])["image_sha256"][0].as_py()

    def reuse(table):
        hashes = table["image_sha256"].to_pylist()
        hashes[0] = borrowed
        return table.set_column(table.schema.get_field_index("image_sha256"), "image_sha256", pa.array(hashes))

    tamper(data_dir, reuse)
    assert "image content unique across the dataset" in failed_names(validate_dataset(data_dir, contracts_config))
