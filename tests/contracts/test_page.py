"""The validation page (index.html): self-contained, and says what was validated, with what, and what was seen."""

import json
import re
import shutil

from mmpipe.contracts.page import PAGE_FILE
from mmpipe.contracts.validate import RESULT_FILE, validate_dataset, validation_dir
from mmpipe.ingest.version import load_dataset
from tests.fixtures.datasets import SAMPLE_CLASSES, make_config

# Anything the browser would fetch from elsewhere: a stylesheet, script, image or font.
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def test_the_page_is_self_contained_and_names_suites_version_and_every_shard(validated_sample):
    version = load_dataset(validated_sample)
    folder = validation_dir(validated_sample, version.version)
    page = (folder / PAGE_FILE).read_text(encoding="utf-8")
    result = json.loads((folder / RESULT_FILE).read_text())
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<style>" in page and "<script" not in page
    assert f"Validation of dataset <code>{version.version}</code>" in page and "passed" in page
    for layer in ("project", "source"):
        for kind, file in result["contracts"][layer]["files"].items():
            assert f"{layer}/{kind}" in page and file["path"] in page and file["sha256"] in page
    for entry in version.shards:
        assert f"<code>{entry.path}</code>" in page and entry.sha256 in page
        assert f"<td class='num'>{entry.rows}</td>" in page
    assert result["validated_at"] in page and result["run_key"] in page
    for outcome in result["outcomes"]:
        assert outcome["expectation"] in page
    assert f"href='{RESULT_FILE}'" in page  # the details, beside it
    assert not (folder / "docs").exists()  # GX's Data Docs (broken offline) are no longer written


def test_observed_values_are_said_in_words(validated_sample):
    """Split shares per split, the classes present, the fewest train rows: not a count of rows or `null`."""
    version = load_dataset(validated_sample)
    result = json.loads((validation_dir(validated_sample, version.version) / RESULT_FILE).read_text())
    observed = {o["expectation"]: o["observed"] for o in result["outcomes"]}
    shares = observed["split shares close to the configured ratios"]
    assert re.fullmatch(r"train 0\.\d\d, val 0\.\d\d, test 0\.\d\d \(expected train 0\.80, val 0\.10, test 0\.10, "
                        r"each within 0\.25\)", shares), shares
    assert observed["every known class present"] == f"all 4 present: {', '.join(SAMPLE_CLASSES)}"
    assert observed["every split present"] == "all 3 present: train, val, test"
    assert re.fullmatch(r"every class has at least 5 train rows \(fewest: '\w+', \d+\)",
                        observed["every class has enough train examples"])
    assert observed["median text_length close to the reference"].startswith("median ")
    assert "(expected under " in observed["label distribution close to the reference"]
    rows = sum(entry.rows for entry in version.shards)
    assert observed["ids unique in the shard"] == f"0 of {rows} rows unexpected"
    assert observed["the dataset has rows"] == f"{rows} rows (expected at least 1)"
    assert all(isinstance(value, str) and value and "null" not in value and "None" not in value
               for value in observed.values()), observed


def test_a_dataset_with_no_rows_says_so_instead_of_null(validated_sample, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(validated_sample, data_dir)
    manifest = json.loads((data_dir / "dataset.json").read_text())
    manifest["shards"] = []
    (data_dir / "dataset.json").write_text(json.dumps(manifest))
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES})
    report = validate_dataset(data_dir, config)
    observed = {o.expectation: o.observed for o in report.outcomes}
    assert observed["every known class present"] == f"missing: {', '.join(SAMPLE_CLASSES)} (none present)"
    assert observed["median text_length close to the reference"] == "nothing to measure: no values in this column"
    assert observed["the dataset has rows"] == "0 rows (expected at least 1)"
    assert all(value is not None and "null" not in str(value) for value in observed.values()), observed
    page = report.page.read_text()
    assert "FAILED" in page and "Shards: 0 shards, 0 rows" in page


def test_a_page_lost_or_written_by_an_older_mmpipe_is_rewritten_on_reuse(validated_sample, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(validated_sample, data_dir)
    config = make_config(data_dir, **{"ingest.classes": SAMPLE_CLASSES, "contracts.split_tolerance": 0.25})
    folder = validation_dir(data_dir, load_dataset(data_dir).version)
    (folder / PAGE_FILE).unlink()
    (folder / "docs").mkdir()
    (folder / "docs" / "dataset.html").write_text("<link href='https://cdn.example/bootstrap.css'>")
    report = validate_dataset(data_dir, config)
    assert report.reused and report.page == folder / PAGE_FILE and report.page.is_file()
    assert not (folder / "docs").exists()
