"""Data contracts on real shards with the real project suites (data_contracts/), inferred source suites and real GX."""

import csv
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmpipe.contracts.infer import accept_classes, export_source_suites, init_source_suites
from mmpipe.contracts.suites import SOURCE_SUITES_DIR, load_contracts, project_suites_dir, read_suite
from mmpipe.contracts.validate import read_reference, validate_dataset
from mmpipe.errors import ContractFileError, DataDirError
from mmpipe.ingest import ingest
from mmpipe.ingest.version import DATASET_FILE
from tests.fixtures.datasets import SAMPLE_CLASSES, duplicate_id, make_config, tamper


@pytest.fixture
def data_dir(ingested_sample, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(ingested_sample, target)
    return target


@pytest.fixture
def contracts_config(data_dir):
    return make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES})


def failed_names(report):
    return {outcome.expectation: outcome for outcome in report.failed}


def test_first_version_passes_and_gets_its_source_suites_inferred(contracts_config, data_dir):
    report = validate_dataset(data_dir, contracts_config)
    assert report.success, report.failure_message()
    assert report.inferred and "contracts inferred from dataset" in report.notice and "contracts show" in report.notice
    source = data_dir / SOURCE_SUITES_DIR
    shards = read_suite(source / "shards.json", "shards")
    assert shards.meta["inferred_from"] == report.dataset_version
    class_set = next(e for e in shards.expectations if e["kwargs"].get("column") == "label")
    assert class_set["kwargs"]["value_set"] == SAMPLE_CLASSES and class_set["severity"] == "critical"
    stored = json.loads((data_dir / "validation" / report.dataset_version / "result.json").read_text())
    assert stored["success"] and stored["inferred"] and len(stored["outcomes"]) == len(report.outcomes) > 25
    assert stored["contracts"]["project"]["origin"] == "built-in"
    assert stored["contracts"]["source"] == {**stored["contracts"]["source"], "origin": "inferred",
                                             "dir": str(source), "inferred_from": report.dataset_version}
    assert {o.suite for o in report.outcomes} == {"files", "project/shards", "project/dataset", "source/shards",
                                                  "source/dataset"}
    out = data_dir / "validation" / report.dataset_version
    assert report.page == out / "index.html" and stored["page"] == str(report.page)
    assert report.dataset_version in report.page.read_text()  # what the page says: tests/contracts/test_page.py
    assert read_reference(data_dir)["dataset_version"] == report.dataset_version
    assert set(report.summary()) == {"dataset_version", "success", "failed", "warnings", "report", "page",
                                     "contracts", "inferred", "notice"}
    again = validate_dataset(data_dir, contracts_config)
    assert again.reused and again.success and not again.inferred and again.notice is None


def test_project_suites_hold_no_fact_of_one_dataset():
    """Class names and observed ranges belong to source suites; the shipped ones must fit any dataset."""
    for kind in ("shards", "dataset"):
        suite = read_suite(project_suites_dir() / f"{kind}.json", kind, "project")
        for entry in suite.expectations:
            kwargs = entry["kwargs"]
            assert entry["severity"] == "critical", entry
            assert kwargs.get("column") != "label" or "value_set" not in kwargs, entry
            for bound in ("min_value", "max_value"):  # a parameter from the settings, or a structural 0/1
                assert bound not in kwargs or isinstance(kwargs[bound], dict) or kwargs[bound] in (0, 1), entry


def _relabel(table):
    labels = table["label"].to_pylist()
    labels[0] = "zebra"
    return table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))


def _shrink_images(table):
    small = pa.array([value[:300] for value in table["image"].to_pylist()], pa.binary(300))
    return table.set_column(table.schema.get_field_index("image"), "image", small)


def _repeat_pair(table):
    """Row 1 becomes a copy of row 0's image and text under its own id: the same pair twice."""
    rows = table.to_pylist()
    rows[1] = {**rows[0], "id": rows[1]["id"]}
    return pa.Table.from_pylist(rows, schema=table.schema)


@pytest.mark.parametrize(
    ("change", "suite", "expectation", "names_a_row"),
    [(_relabel, "source/shards", "label is a known class", True),
     (duplicate_id, "project/shards", "ids unique in the shard", True),
     (_shrink_images, "project/shards", "images are S x S x 3 bytes", True),
     (_repeat_pair, "project/dataset", "each (image, text) pair once", True),
     (lambda t: t.drop_columns(["label"]), "project/shards", "the shard has exactly the shard columns", False),
     (lambda t: t.slice(0, 0), "project/shards", "the shard has rows", False)],
    ids=["unknown-label", "duplicate-id", "wrong-image-size", "repeated-pair", "missing-column", "empty-shard"],
)
def test_each_critical_expectation_fails_on_a_shard_built_to_break_it(
        contracts_config, data_dir, change, suite, expectation, names_a_row):
    assert validate_dataset(data_dir, contracts_config).success  # infers the source suites from good data
    original_ids = pq.read_table(data_dir / next(
        e for e in json.loads((data_dir / DATASET_FILE).read_text())["shards"] if e["split"] == "train")["path"],
        columns=["id"])["id"].to_pylist()
    tamper(data_dir, change)
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success
    failed = failed_names(report)
    assert expectation in failed, list(failed)
    outcome = failed[expectation]
    assert outcome.severity == "critical" and outcome.suite == suite
    if suite.endswith("shards"):
        assert outcome.shards and outcome.shards[0].startswith("shards/train-")
    if names_a_row:
        assert outcome.examples and set(outcome.examples) <= set(original_ids)
    message = report.failure_message()
    assert expectation in message and "observed" in message and outcome.check in message


def test_a_rewritten_shard_is_caught_even_when_a_pass_is_stored(contracts_config, data_dir):
    """A stored verdict is a claim about files: a shard changed under it is re-validated and named."""
    assert validate_dataset(data_dir, contracts_config).success
    table = tamper(data_dir, lambda t: t.set_column(t.schema.get_field_index("label"), "label",
                                                     pa.array(["zebra"] * t.num_rows)), record=False)
    report = validate_dataset(data_dir, contracts_config)
    assert not report.reused and not report.success
    failed = failed_names(report)
    changed = failed["shard files unchanged since ingest"]
    assert len(changed.shards) == 1 and changed.shards[0].startswith("shards/train-")
    assert f"'zebra' ({table.num_rows} rows)" in failed["label is a known class"].observed


def test_a_later_version_with_a_new_class_fails_until_it_is_accepted(sample_manifest, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(sample_manifest.parent, source)
    config = make_config(tmp_path / "data")
    ingest(source / "manifest.csv", config)
    first = validate_dataset(config.data_dir, config)
    assert first.success and first.inferred
    with open(source / "manifest.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([[f"a striped animal number {n}", "images/" + sorted(
            p.name for p in (source / "images").iterdir())[n], "zebra"] for n in range(6)])
    ingest(source / "manifest.csv", config)
    later = validate_dataset(config.data_dir, config)
    assert not later.success and not later.inferred
    outcome = failed_names(later)["label is a known class"]
    assert "'zebra' (6 rows)" in outcome.observed
    assert f"mmpipe contracts accept-classes --data {config.data_dir.absolute()}" in outcome.hint
    assert "accept-classes" in later.failure_message()
    added, path = accept_classes(config.data_dir, config)
    assert added == {"zebra": 6} and path == config.data_dir.absolute() / SOURCE_SUITES_DIR / "shards.json"
    accepted = validate_dataset(config.data_dir, config)
    assert accepted.success
    assert accept_classes(config.data_dir, config) == ({}, path)


def test_a_class_that_disappears_is_a_warning(sample_manifest, tmp_path):
    config = make_config(tmp_path / "data")
    ingest(sample_manifest, config)
    assert validate_dataset(config.data_dir, config).success
    source = tmp_path / "source"
    shutil.copytree(sample_manifest.parent, source)
    with open(sample_manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] != "moon"]
    with open(source / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    ingest(source / "manifest.csv", config)
    report = validate_dataset(config.data_dir, config)
    assert report.success
    warned = {o.expectation: o for o in report.warnings}
    assert "moon" in warned["every known class present"].observed


def test_a_version_that_fails_the_project_suites_infers_nothing(contracts_config, data_dir):
    tamper(data_dir, duplicate_id)
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success and not report.inferred
    assert not (data_dir / SOURCE_SUITES_DIR).exists()
    assert {o.suite for o in report.outcomes} == {"files", "project/shards", "project/dataset"}
    assert report.contracts["source"]["origin"] == "none yet"


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


def test_a_small_class_is_a_warning_that_names_it(contracts_config, data_dir):
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "contracts.min_train_per_class": 10_000})
    report = validate_dataset(data_dir, config)
    assert report.success
    small = next(o for o in report.warnings if o.expectation == "every class has enough train examples")
    assert all(f"'{name}' (" in small.observed for name in SAMPLE_CLASSES)


def test_exported_suites_win_and_an_edit_is_not_served_from_cache(contracts_config, data_dir, tmp_path):
    assert validate_dataset(data_dir, contracts_config).success
    exported = tmp_path / "reviewed"
    export_source_suites(data_dir, contracts_config, exported)
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "contracts.suites_dir": str(exported)})
    first = validate_dataset(data_dir, config)
    assert first.success and not first.reused and first.contracts["source"]["origin"] == "exported"
    assert validate_dataset(data_dir, config).reused
    suite_path = exported / "shards.json"
    suite = json.loads(suite_path.read_text())
    class_set = next(e for e in suite["expectations"] if e["kwargs"].get("column") == "label")
    class_set["kwargs"]["value_set"] = ["sun"]
    suite_path.write_text(json.dumps(suite))
    edited = validate_dataset(data_dir, config)
    assert not edited.reused and not edited.success
    assert "'moon'" in failed_names(edited)["label is a known class"].observed


def test_the_working_directory_does_not_change_which_suites_apply(contracts_config, data_dir, tmp_path,
                                                                  monkeypatch):
    decoy = tmp_path / "cwd" / "data_contracts"
    decoy.mkdir(parents=True)
    for name in ("shards.json", "dataset.json"):
        (decoy / name).write_text('{"name": "decoy", "expectations": [{"type": "expect_column_values_to_be_in_set",'
                                  ' "kwargs": {"column": "label", "value_set": ["nothing"]}, "severity": "critical"}]}')
    monkeypatch.chdir(decoy.parent)
    report = validate_dataset(data_dir, contracts_config)
    assert report.success
    assert report.contracts["project"]["dir"] == str(project_suites_dir())


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
    assert validate_dataset(data_dir, contracts_config).success
    (data_dir / SOURCE_SUITES_DIR / "shards.json").write_text(content)
    with pytest.raises(ContractFileError, match=message):
        validate_dataset(data_dir, contracts_config)


def test_exported_suites_that_are_missing_are_an_error_not_a_fallback(contracts_config, data_dir, tmp_path):
    config = make_config(data_dir, **{"contracts.suites_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ContractFileError, match="mmpipe contracts export"):
        load_contracts(data_dir, config)


def test_contracts_init_infers_suites_that_pass_and_refuses_to_overwrite(data_dir, tmp_path):
    out = tmp_path / "new_contracts"
    config = make_config(data_dir, **{"contracts.suites_dir": str(out)})
    paths = init_source_suites(data_dir, config, out)
    label_check = next(e for e in read_suite(paths[0], "shards").expectations if e["kwargs"].get("column") == "label")
    assert label_check["kwargs"]["value_set"] == SAMPLE_CLASSES
    report = validate_dataset(data_dir, config)
    assert report.success and report.contracts["source"]["origin"] == "exported"
    with pytest.raises(ContractFileError, match="--force"):
        init_source_suites(data_dir, config, out)


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


def test_an_empty_dataset_fails_with_a_report_not_a_crash(contracts_config, data_dir):
    manifest = json.loads((data_dir / DATASET_FILE).read_text())
    manifest["shards"] = []
    (data_dir / DATASET_FILE).write_text(json.dumps(manifest))
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success and {"the dataset has rows", "every split present"} <= set(failed_names(report))


def test_contracts_use_the_settings_the_dataset_was_built_with(contracts_config, data_dir):
    other = contracts_config.model_copy(update={"image": contracts_config.image.model_copy(update={"size": 64})})
    assert validate_dataset(data_dir, other).success  # 16 px shards are right for a 16 px dataset


def test_an_image_in_two_splits_is_a_warning_naming_the_rows(contracts_config, data_dir):
    manifest = json.loads((data_dir / DATASET_FILE).read_text())
    val = next(e for e in manifest["shards"] if e["split"] == "val")
    borrowed = pq.read_table(data_dir / val["path"])["image_sha256"][0].as_py()

    def reuse(table):
        hashes = table["image_sha256"].to_pylist()
        hashes[0] = borrowed
        return table.set_column(table.schema.get_field_index("image_sha256"), "image_sha256", pa.array(hashes))

    assert validate_dataset(data_dir, contracts_config).success
    table = tamper(data_dir, reuse)
    report = validate_dataset(data_dir, contracts_config)
    assert report.success  # a manifest's own split column may do this on purpose
    leak = next(o for o in report.warnings if o.expectation == "each image in one split")
    assert table["id"][0].as_py() in leak.examples


def test_contracts_commands_show_export_init_and_accept(sample_manifest, tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from mmpipe.cli import app
    from tests.fixtures.cli import run_main

    runner, data = CliRunner(), str(tmp_path / "data")
    source = tmp_path / "source"
    shutil.copytree(sample_manifest.parent, source)
    config = make_config(tmp_path / "data")
    ingest(source / "manifest.csv", config)
    code, _, err = run_main(["contracts", "accept-classes", "--data", data], monkeypatch, capsys)
    assert code == 2 and "no source contracts yet" in err
    assert "no source contracts yet" in runner.invoke(app, ["contracts", "show", "--data", data]).stdout
    version = validate_dataset(config.data_dir, config).dataset_version
    shown = runner.invoke(app, ["contracts", "show", "--data", data])
    assert shown.exit_code == 0 and f"inferred from dataset {version}" in shown.stdout
    assert "critical label is a known class" in shown.stdout and '"window"' in shown.stdout
    described = json.loads(runner.invoke(app, ["contracts", "show", "--data", data, "--json"]).stdout)
    assert described["source"]["origin"] == "inferred" and described["source"]["expectations"]["shards"]
    exported = runner.invoke(app, ["contracts", "export", str(tmp_path / "mine"), "--data", data])
    assert exported.exit_code == 0 and (tmp_path / "mine" / "dataset.json").is_file()
    assert f"--contracts {tmp_path / 'mine'}" in exported.stdout
    code, _, err = run_main(["contracts", "export", str(tmp_path / "mine"), "--data", data], monkeypatch, capsys)
    assert code == 2 and "--force" in err
    code, _, err = run_main(["contracts", "init", "--data", data], monkeypatch, capsys)
    assert code == 2 and "--force" in err
    assert runner.invoke(app, ["contracts", "init", "--data", data, "--force"]).exit_code == 0
    with open(source / "manifest.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([[f"a striped animal number {n}", "images/" + sorted(
            p.name for p in (source / "images").iterdir())[n], "zebra"] for n in range(6)])
    ingest(source / "manifest.csv", config)
    accepted = runner.invoke(app, ["contracts", "accept-classes", "--data", data])
    assert accepted.exit_code == 0 and "accepted 'zebra' (6 rows)" in accepted.stdout
    assert validate_dataset(config.data_dir, config).success


def test_a_split_share_warning_shows_the_shares_not_row_ids(data_dir):
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "contracts.split_tolerance": 0.001})
    report = validate_dataset(data_dir, config)
    assert report.success
    off = next(o for o in report.warnings if o.expectation == "split shares close to the configured ratios")
    counts = json.loads((data_dir / DATASET_FILE).read_text())["splits"]
    total = sum(counts.values())
    shown = ", ".join(f"{split} {counts[split] / total:.2f}" for split in ("train", "val", "test"))
    assert off.observed == f"{shown} (expected train 0.80, val 0.10, test 0.10, each within 0.001)"
    assert off.examples == []  # every row of an off split would be an example: none is named
    assert off.observed in report.to_markdown() and off.observed in report.page.read_text()


def test_a_failed_batch_names_only_its_bad_shard(contracts_config, data_dir):
    """Shards are validated in batches: a batch's failure must be pinned to the one bad shard, not to all."""
    assert validate_dataset(data_dir, contracts_config).success
    shards = [entry["path"] for entry in json.loads((data_dir / DATASET_FILE).read_text())["shards"]]
    assert len(shards) >= 3  # one batch: the shards share their columns and none is empty
    bad = next(path for path in shards if path.startswith("shards/train-"))
    tamper(data_dir, duplicate_id)  # the first train shard
    shutil.rmtree(data_dir / "validation" / "cache")  # else the good shards' stored passes leave a batch of one
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success
    assert failed_names(report)["ids unique in the shard"].shards == [bad]
    for outcome in report.outcomes:  # every shard but the bad one passes every shard expectation
        assert set(outcome.shards) <= {bad}, (outcome.expectation, outcome.shards)


def test_a_shard_hash_edited_in_dataset_json_is_checked_against_the_file(contracts_config, data_dir):
    """A hash changed by hand (the shard's size and mtime untouched) is a claim the file no longer backs."""
    assert validate_dataset(data_dir, contracts_config).success
    record = json.loads((data_dir / DATASET_FILE).read_text())
    edited = record["shards"][0]
    edited["sha256"] = "0" * 64
    (data_dir / DATASET_FILE).write_text(json.dumps(record))
    report = validate_dataset(data_dir, contracts_config)
    assert not report.success and not report.reused
    [integrity] = [outcome for outcome in report.failed if outcome.suite == "files"]
    assert edited["path"] in integrity.observed


def test_a_validated_data_dir_moved_elsewhere_reports_where_its_files_are_now(contracts_config, data_dir, tmp_path):
    assert validate_dataset(data_dir, contracts_config).success
    moved = tmp_path / "moved"
    data_dir.rename(moved)
    report = validate_dataset(moved, make_config(moved, **{"ingest.classes": SAMPLE_CLASSES}))
    assert report.reused and report.success
    assert report.contracts["source"]["dir"] == str(moved / SOURCE_SUITES_DIR)
    stored = json.loads(report.report.read_text())
    assert stored["page"] == str(report.page) and str(moved) in stored["contracts"]["source"]["files"]["shards"]["path"]
    assert str(data_dir) not in report.page.read_text()  # the page a reviewer opens names the files where they are


def test_a_truncated_shard_is_named_not_an_internal_error(contracts_config, data_dir):
    shard = next((data_dir / "shards").rglob("*.parquet"))
    with open(shard, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 2)  # what a full disk or a half copy leaves
    named = rf"shard {shard.relative_to(data_dir)} cannot be read .* re-run `mmpipe ingest`"
    with pytest.raises(DataDirError, match=named):
        validate_dataset(data_dir, contracts_config)


def test_an_inference_cut_short_after_one_suite_file_is_inferred_again_whole(contracts_config, data_dir):
    """A kill between the two inferred suite files leaves one: the next validation infers both again (advising
    `contracts init`, which refuses to overwrite without --force, would not work)."""
    first = validate_dataset(data_dir, contracts_config)
    (data_dir / SOURCE_SUITES_DIR / "dataset.json").unlink()
    shutil.rmtree(data_dir / "validation" / first.dataset_version)  # the verdict goes with the suites it used
    again = validate_dataset(data_dir, contracts_config)
    assert again.success and again.inferred
    assert (data_dir / SOURCE_SUITES_DIR / "dataset.json").is_file()
