"""The core ingest end to end on tiny real data: accounting, determinism, incremental reuse."""

import csv
import shutil

import pyarrow.parquet as pq
import pytest

from mmpipe.files import sha256_file
from mmpipe.ingest import ingest
from mmpipe.ingest.reasons import Reason
from mmpipe.ingest.schema import QUARANTINE_SCHEMA, shard_schema
from mmpipe.ingest.shards import ShardWriter
from mmpipe.ingest.version import load_dataset
from tests.fixtures.datasets import make_config
from tests.fixtures.files import distinct_images, gradient, save, write_manifest, write_manifest_csv


def read_files(data_dir, entries):
    return [pq.read_table(data_dir / entry.path) for entry in entries]


def test_every_row_is_accounted_for(sample_manifest, config):
    version = ingest(sample_manifest, config)
    m = version
    with open(sample_manifest, newline="") as handle:
        manifest_rows = sum(1 for _ in csv.DictReader(handle))
    assert m.rows_read == manifest_rows
    assert m.rows_read == m.accepted + sum(m.quarantined.values()) + m.duplicates
    shards = read_files(config.data_dir, m.shards)
    quarantine = read_files(config.data_dir, m.quarantine)
    assert sum(table.num_rows for table in shards) == m.accepted == sum(m.splits.values())
    assert sum(table.num_rows for table in quarantine) == sum(m.quarantined.values())
    expected = {Reason.IMAGE_MISSING, Reason.IMAGE_UNREADABLE, Reason.TEXT_EMPTY, Reason.LABEL_MISSING,
                Reason.LABEL_UNKNOWN, Reason.PATH_OUTSIDE_ROOT, Reason.LABEL_CONFLICT}
    assert expected <= set(m.quarantined)
    assert m.duplicates >= 1


def test_shards_and_quarantine_follow_the_declared_schemas(sample_manifest, config):
    m = ingest(sample_manifest, config)
    for entry in m.shards:
        path = config.data_dir / entry.path
        assert pq.read_schema(path).equals(shard_schema(16), check_metadata=False)
        assert sha256_file(path) == entry.sha256
        table = pq.read_table(path)
        assert set(table["split"].to_pylist()) == {entry.split}
        assert set(table["label"].to_pylist()) <= set(m.classes)
        assert table["id"].null_count == 0 and len(set(table["id"].to_pylist())) == table.num_rows
        column_chunks = pq.read_metadata(path).row_group(0)
        compression = {column_chunks.column(i).path_in_schema: column_chunks.column(i).compression
                       for i in range(column_chunks.num_columns)}
        assert compression["image"] == "UNCOMPRESSED"
        assert compression["text"] == "ZSTD"
    quarantine = pq.read_table(config.data_dir / m.quarantine[0].path)
    assert quarantine.schema.equals(QUARANTINE_SCHEMA, check_metadata=False)
    assert quarantine["reason"].null_count == 0 and quarantine["detail"].null_count == 0
    assert quarantine["id"].null_count == 0
    assert set(quarantine["reason"].to_pylist()) <= {reason.value for reason in Reason}


def test_dataset_json_records_version_lineage_and_counts(sample_manifest, config):
    version = ingest(sample_manifest, config)
    reloaded = load_dataset(config.data_dir)
    assert reloaded == version
    m = reloaded
    assert m.config_hash == config.ingest_hash()
    assert m.classes == ["lantern", "moon", "sun", "window"]
    assert m.image_shape == (16, 16, 3)
    assert m.source["kind"] == "csv"
    assert set(m.timings) >= {"plan_s", "process_s", "finalize_s", "total_s"}
    assert sum(sum(per_class.values()) for per_class in m.counts.values()) == m.accepted
    assert all(m.reject_examples[reason] for reason in m.quarantined)
    summary = version.summary()
    assert set(summary) == {"dataset_version", "rows_read", "accepted", "duplicates", "quarantined", "splits",
                            "classes", "data_dir"}


def test_same_input_and_config_give_byte_identical_shards(sample_manifest, tmp_path):
    first = ingest(sample_manifest, make_config(tmp_path / "one"))
    second = ingest(sample_manifest, make_config(tmp_path / "two", **{"ingest.workers": 1}))
    assert first.version == second.version
    for a, b in zip(first.shards, second.shards, strict=True):
        assert (tmp_path / "one" / a.path).read_bytes() == (tmp_path / "two" / b.path).read_bytes()


def test_unchanged_reingest_reuses_everything(sample_manifest, config):
    first = ingest(sample_manifest, config)
    shard_mtimes = {entry.path: (config.data_dir / entry.path).stat().st_mtime_ns
                    for entry in first.shards}
    second = ingest(sample_manifest, config)
    assert second.version == first.version
    assert {path: (config.data_dir / path).stat().st_mtime_ns for path in shard_mtimes} == shard_mtimes


def test_a_settings_change_reprocesses_and_changes_the_version(sample_manifest, config, tmp_path):
    first = ingest(sample_manifest, config)
    changed = ingest(sample_manifest, make_config(config.data_dir, **{"image.size": 8}))
    assert changed.version != first.version
    assert changed.chunks["cached"] == 0
    assert not any((config.data_dir / entry.path).exists() for entry in first.shards)


def test_added_rows_are_processed_alone_and_old_rows_keep_their_split(sample_manifest, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(sample_manifest.parent, source)
    config = make_config(tmp_path / "data")
    first = ingest(source / "manifest.csv", config)
    old_splits = dict(_ids_and_splits(config.data_dir, first))
    save(gradient(20, 20), source / "images" / "new.png", "PNG")
    with open(source / "manifest.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([[f"A new snapshot at noon number {n}", "images/new.png", "sun"]
                                      for n in range(3)])
    second = ingest(source / "manifest.csv", config)
    chunks = second.chunks
    assert chunks["cached"] >= chunks["total"] - 2
    assert second.rows_read == first.rows_read + 3
    new_splits = dict(_ids_and_splits(config.data_dir, second))
    assert all(new_splits[row_id] == split for row_id, split in old_splits.items())
    assert len(new_splits) == len(old_splits) + 3


def _ids_and_splits(data_dir, version):
    for table in read_files(data_dir, version.shards):
        yield from zip(table["id"].to_pylist(), table["split"].to_pylist(), strict=True)


@pytest.fixture
def small_source(tmp_path):
    for name in ("a", "b", "c"):
        save(gradient(10 + len(name), 12), tmp_path / "src" / f"{name}.png", "PNG")
    return tmp_path / "src"


def test_duplicates_conflicts_and_given_splits(small_source, tmp_path):
    rows = [
        {"id": "1", "text": "one", "image": "a.png", "label": "x", "split": "test", "group": ""},
        {"id": "1", "text": "one", "image": "a.png", "label": "x", "split": "test", "group": ""},  # duplicate
        {"id": "1", "text": "other", "image": "b.png", "label": "x", "split": "", "group": ""},  # id reused
        {"id": "2", "text": "two", "image": "b.png", "label": "x", "split": "", "group": ""},
        {"id": "3", "text": "two", "image": "b.png", "label": "y", "split": "", "group": ""},  # conflict
        {"id": "4", "text": "four", "image": "c.png", "label": "x", "split": "holdout", "group": ""},
        {"id": "5", "text": "five", "image": "c.png", "label": "x", "split": "", "group": "g"},
        {"id": "6", "text": "six", "image": "c.png", "label": "y", "split": "", "group": "g"},
    ]
    manifest = write_manifest_csv(small_source / "m.csv", rows,
                                  columns=("id", "text", "image", "label", "split", "group"))
    config = make_config(tmp_path / "data", **{"ingest.chunk_rows": 2})
    m = ingest(manifest, config)
    assert m.duplicates == 1
    assert m.quarantined == {"id_conflict": 1, "label_conflict": 2, "split_invalid": 1}
    assert m.accepted == 3
    accepted = {row_id: split for row_id, split in _ids_and_splits(config.data_dir, m)}
    assert accepted["1"] == "test"
    assert accepted["5"] == accepted["6"]  # one group, one split
    quarantine = pq.read_table(config.data_dir / m.quarantine[0].path).to_pylist()
    conflict = next(row for row in quarantine if row["reason"] == "id_conflict")
    assert conflict["text"] == "other" and "m.csv:2" in conflict["detail"]


def test_empty_text_policy(small_source, tmp_path):
    manifest = write_manifest_csv(small_source / "m.csv", [{"text": " <b></b> ", "image": "a.png", "label": "x"}])
    strict = ingest(manifest, make_config(tmp_path / "strict"))
    assert strict.quarantined == {"text_empty": 1}
    lenient = ingest(manifest, make_config(tmp_path / "lenient", **{"text.allow_empty": True}))
    assert lenient.accepted == 1


def test_folder_source_end_to_end(tmp_path):
    for label in ("cat", "dog"):
        for index in range(3):
            save(gradient(12 + index, 10), tmp_path / "tree" / label / f"{index}.jpg", "JPEG")
            (tmp_path / "tree" / label / f"{index}.txt").write_text(f"a {label} number {index}")
    (tmp_path / "tree" / "dog" / "bad.png").write_bytes(b"junk")
    (tmp_path / "tree" / "dog" / "bad.txt").write_text("a broken dog")
    save(gradient(), tmp_path / "tree" / "dog" / "silent.png", "PNG")  # no sidecar: empty text
    config = make_config(tmp_path / "data")
    m = ingest(tmp_path / "tree", config)
    assert m.classes == ["cat", "dog"]
    assert m.accepted == 6 and m.quarantined == {"image_unreadable": 1, "text_empty": 1}
    assert m.source["kind"] == "folder"


def test_a_failed_finalize_leaves_the_previous_dataset_intact(sample_manifest, config, monkeypatch):
    before = ingest(sample_manifest, config)

    def broken_write(self, table):
        raise OSError("disk full")

    monkeypatch.setattr(ShardWriter, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        ingest(sample_manifest, make_config(config.data_dir, **{"text.lowercase": True}))
    after = load_dataset(config.data_dir)
    assert after == before
    for entry in after.shards:
        assert sha256_file(config.data_dir / entry.path) == entry.sha256
    assert not list(config.data_dir.glob("shards/*.tmp")) and not list(config.data_dir.glob("shards/.*"))


def test_no_image_is_in_two_splits_and_new_rows_move_none(tmp_path):
    """Several captions per image are ordinary: all rows of one image share a split, by default."""
    images = distinct_images(tmp_path / "src" / "images", 40, seed=11)
    rows = [{"text": f"caption {n} of {name}", "image": f"images/{name}", "label": f"class{i % 3}"}
            for i, name in enumerate(images) for n in range(4)]
    manifest = write_manifest(tmp_path / "src" / "m.csv", rows)
    config = make_config(tmp_path / "data")
    first = ingest(manifest, config)
    assert first.accepted == 160 and all(first.splits.values())
    splits_of_image: dict[str, set[str]] = {}
    for table in read_files(config.data_dir, first.shards):
        for sha, split in zip(table["image_sha256"].to_pylist(), table["split"].to_pylist(), strict=True):
            splits_of_image.setdefault(sha, set()).add(split)
    assert len(splits_of_image) == 40 and all(len(splits) == 1 for splits in splits_of_image.values())
    before = dict(_ids_and_splits(config.data_dir, first))
    more = distinct_images(tmp_path / "src" / "more", 10, seed=12)
    rows += [{"text": f"new caption {n}", "image": f"more/{name}", "label": "class0"}
             for name in more for n in range(2)]
    rows += [{"text": "one more caption", "image": f"images/{images[0]}", "label": "class0"}]
    second = ingest(write_manifest(tmp_path / "src" / "m.csv", rows), config)
    after = dict(_ids_and_splits(config.data_dir, second))
    assert all(after[row_id] == split for row_id, split in before.items())
    assert len(after) == len(before) + 21
    first_image = {split for table in read_files(config.data_dir, second.shards)
                   for sha, split in zip(table["image_sha256"].to_pylist(), table["split"].to_pylist(), strict=True)
                   if sha == sha256_file(tmp_path / "src" / "images" / images[0])}
    assert len(first_image) == 1  # the new caption joined its image's split


def test_a_given_group_decides_the_split_over_the_image(tmp_path):
    images = distinct_images(tmp_path / "src" / "images", 30, seed=13)
    rows = [{"text": f"caption {n}", "image": f"images/{images[n % 30]}", "label": "x", "group": "g1"}
            for n in range(60)]
    config = make_config(tmp_path / "data")
    m = ingest(write_manifest(tmp_path / "src" / "m.csv", rows), config)
    assert sum(1 for count in m.splits.values() if count) == 1  # one group, one split, 30 images


def test_a_changed_source_prunes_the_chunks_no_longer_used_and_keeps_the_rest(sample_manifest, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(sample_manifest.parent, source)
    config = make_config(tmp_path / "data")
    ingest(source / "manifest.csv", config)
    cache = config.data_dir / "cache"
    before = {folder: {p.name for p in (cache / folder).glob("*.parquet")} for folder in ("raw", "chunks")}
    with open(source / "manifest.csv") as handle:
        lines = handle.readlines()
    (source / "manifest.csv").write_text("".join(lines[: len(lines) // 2]))  # the second half is gone
    second = ingest(source / "manifest.csv", config)
    after = {folder: {p.name for p in (cache / folder).glob("*.parquet")} for folder in ("raw", "chunks")}
    assert len(after["chunks"]) == second.chunks["total"] < len(before["chunks"])
    assert len(after["raw"]) == second.chunks["total"]
    # Only the chunk the cut ends in is new; the others were reused, not cleaned again.
    assert len(after["chunks"] - before["chunks"]) <= 1 and second.chunks["cached"] >= second.chunks["total"] - 1


def test_manifest_columns_reach_the_shards_and_the_quarantine(tmp_path):
    import json

    from tests.fixtures.datasets import make_config
    from tests.fixtures.files import distinct_images, write_manifest

    names = distinct_images(tmp_path / "src", 6, seed=3)
    rows = [{"text": f"row {i}", "image": name, "label": "cat" if i % 2 else "dog", "region": f"r{i % 3}"}
            for i, name in enumerate(names)] + [{"text": "gone", "image": "missing.png", "label": "cat", "region": "x"}]
    summary = ingest(write_manifest(tmp_path / "src" / "m.csv", rows), make_config(tmp_path / "data"))
    shards = [pq.read_table(path, columns=["text", "extra"]).to_pydict()
              for path in (tmp_path / "data" / "shards").glob("*.parquet")]
    kept = {text: json.loads(extra) for table in shards for text, extra in zip(*table.values(), strict=True)}
    assert kept == {f"row {i}": {"region": f"r{i % 3}"} for i in range(6)} and summary.accepted == 6
    quarantine = [row for path in (tmp_path / "data" / "quarantine").glob("*.parquet")
                  for row in pq.read_table(path).to_pylist()]
    assert [json.loads(row["extra"]) for row in quarantine] == [{"region": "x"}]
