import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmpipe.files import atomic_path, sha256_file
from mmpipe.ingest.shards import ShardWriter

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("image", pa.binary(3), nullable=False)])


def table(n, start=0):
    return pa.table({"id": [f"r{i}" for i in range(start, start + n)], "image": [b"abc"] * n}, schema=SCHEMA)


def test_writer_rolls_files_and_names_them_by_content(tmp_path):
    with ShardWriter(tmp_path / "shards", "train", SCHEMA, rows_per_shard=4, data_dir=tmp_path) as writer:
        writer.write(table(6))
        writer.write(table(3, start=6))
    assert [file.rows for file in writer.files] == [4, 4, 1]
    for file in writer.files:
        path = tmp_path / file.path
        assert file.sha256 == sha256_file(path) and file.sha256[:12] in path.name
        assert pq.read_schema(path).equals(SCHEMA)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(
        (tmp_path / f.path).name for f in writer.files)


def test_a_failure_leaves_no_partial_file(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "s", "train", SCHEMA, 100, tmp_path) as writer:
        writer.write(table(5))
        raise RuntimeError("interrupted")
    assert list((tmp_path / "s").iterdir()) == []


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "dataset.json"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as temp:
        temp.write_text("half")
        raise ValueError
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
