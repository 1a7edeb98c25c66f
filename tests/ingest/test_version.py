"""dataset.json: the typed record of a dataset version, its migration and its damage reports."""

import json
import shutil

import pytest

from mmpipe.config import load_config
from mmpipe.errors import DataDirError
from mmpipe.ingest.version import DATASET_FILE, FORMAT_VERSION, load_dataset


@pytest.fixture
def data_dir(ingested_sample, tmp_path):
    shutil.copytree(ingested_sample, tmp_path / "data")
    return tmp_path / "data"


def test_the_record_answers_what_later_stages_ask(data_dir):
    version = load_dataset(data_dir)
    assert version.format == FORMAT_VERSION and version.image_size == 16 == version.image_config.size
    assert sum(version.rows_of(split) for split in ("train", "val", "test")) == version.accepted
    assert all(entry.split == "train" and version.path_of(entry).is_file() for entry in version.shards_of("train"))
    other = load_config(None, {"image.size": 64, "text.max_chars": 5}, environ={})
    built = version.built_with(other)
    assert built.image.size == 16 and built.text.max_chars == version.text_config.max_chars != 5


def test_save_and_load_round_trip_without_the_data_dir_in_the_file(data_dir, tmp_path):
    version = load_dataset(data_dir)
    moved = version.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    (tmp_path / "elsewhere").mkdir()
    moved.save()
    assert "data_dir" not in json.loads((tmp_path / "elsewhere" / DATASET_FILE).read_text())
    assert load_dataset(tmp_path / "elsewhere") == moved


def test_a_format_1_record_is_read_with_unknown_mtimes(data_dir):
    content = json.loads((data_dir / DATASET_FILE).read_text())
    content["format"] = 1
    for entry in content["shards"] + content["quarantine"]:
        del entry["mtime_ns"]
    (data_dir / DATASET_FILE).write_text(json.dumps(content))
    version = load_dataset(data_dir)
    assert version.format == FORMAT_VERSION and all(entry.mtime_ns is None for entry in version.shards)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: "{not json", "cannot read"),
    (lambda c: json.dumps({**c, "format": FORMAT_VERSION + 1}), "newer mmpipe"),
    (lambda c: json.dumps({key: value for key, value in c.items() if key != "classes"}), "damaged \\(classes"),
    (lambda c: json.dumps({**c, "accepted": "many"}), "damaged \\(accepted"),
])
def test_a_damaged_record_says_which_field_and_what_to_run(data_dir, change, message):
    path = data_dir / DATASET_FILE
    path.write_text(change(json.loads(path.read_text())))
    with pytest.raises(DataDirError, match=message) as raised:
        load_dataset(data_dir)
    assert "mmpipe" in str(raised.value)


def test_no_dataset_says_to_ingest(tmp_path):
    with pytest.raises(DataDirError, match="mmpipe ingest SOURCE"):
        load_dataset(tmp_path)


def test_the_same_rows_written_as_other_parquet_bytes_keep_their_version(ingested_sample, sample_manifest, tmp_path,
                                                                         monkeypatch):
    """What another pyarrow build does (other encodings, other bytes for the same values) must not rename the version:
    runs, validations and the drift reference are tied to it."""
    import mmpipe.ingest.shards as shards
    from mmpipe.ingest import ingest
    from tests.fixtures.datasets import SAMPLE_CLASSES, make_config

    original = shards.parquet_options
    monkeypatch.setattr(shards, "parquet_options", lambda schema: {**original(schema), "compression": "gzip",
                                                                   "use_dictionary": False})
    rewritten = ingest(sample_manifest, make_config(tmp_path / "data", **{"ingest.classes": SAMPLE_CLASSES}))
    before = load_dataset(ingested_sample)
    assert [entry.sha256 for entry in rewritten.shards] != [entry.sha256 for entry in before.shards]
    assert rewritten.version == before.version
