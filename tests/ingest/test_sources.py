import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmpipe.errors import SourceError
from mmpipe.ingest.reasons import Reason
from mmpipe.ingest.sources import open_source
from tests.fixtures.files import gradient, save, write_manifest_csv


def rows_of(path):
    return list(open_source(path).rows())


def test_csv_manifest_rows_with_optional_columns(tmp_path):
    path = write_manifest_csv(
        tmp_path / "m.csv",
        [{"text": "a", "image": "x.png", "label": "cat", "id": "r1", "split": "test", "group": "g"},
         {"text": "b", "image": "y.png", "label": "dog", "id": "", "split": "", "group": ""}],
        columns=("id", "text", "image", "label", "split", "group"),
    )
    first, second = rows_of(path)
    assert first["id"] == "r1" and first["split"] == "test" and first["group"] == "g"
    assert first["source"] == "m.csv:2" and first["row"] == 0
    assert second["text"] == "b" and second["reason"] is None


def test_jsonl_manifest_values_and_bad_lines_are_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps({"text": "a", "image": "x.png", "label": 3}) + "\n"
        + "{not json\n\n"
        + json.dumps(["a", "list"]) + "\n"
        + json.dumps({"text": ["nested"], "image": "x.png", "label": "cat"}) + "\n"
    )
    good, broken, not_object, nested = rows_of(path)
    assert good["label"] == "3"
    assert broken["reason"] == Reason.ROW_MALFORMED and "line 2" in broken["detail"]
    assert not_object["reason"] == Reason.ROW_MALFORMED and "JSON object" in not_object["detail"]
    assert nested["reason"] == Reason.ROW_MALFORMED and "'text'" in nested["detail"]


def test_parquet_manifest_streams_and_casts(tmp_path):
    path = tmp_path / "m.parquet"
    table = pa.table({"text": ["a", "b"], "image": ["x.png", "y.png"], "label": [1, 2], "extra": [0, 0]})
    pq.write_table(table, path)
    rows = rows_of(path)
    assert [row["label"] for row in rows] == ["1", "2"]
    assert rows[1]["source"] == "m.parquet#1"


def test_invalid_utf8_is_marked_not_fatal(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"text,image,label\nbad \xff\xfe bytes,x.png,cat\ngood,y.png,dog\n")
    broken, good = rows_of(path)
    assert broken["reason"] == Reason.TEXT_INVALID and "'text'" in broken["detail"]
    assert "\ufffd" in broken["text"]
    broken["text"].encode("utf-8")
    assert good["reason"] is None


def test_jsonl_lone_surrogate_escape_is_text_invalid(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "x\\ud800y", "image": "a.png", "label": "cat"}\n')
    (row,) = rows_of(path)
    assert row["reason"] == Reason.TEXT_INVALID


def test_folder_tree_with_sidecars_and_ignored_files(tmp_path):
    save(gradient(), tmp_path / "cat" / "a.jpg", "JPEG")
    (tmp_path / "cat" / "a.txt").write_text("a cat on a mat")
    save(gradient(), tmp_path / "dog" / "b.png", "PNG")
    (tmp_path / "dog" / "notes.md").write_text("x")
    (tmp_path / "dog" / "orphan.txt").write_text("no image")
    (tmp_path / "README").write_text("top-level file")
    source = open_source(tmp_path)
    rows = list(source.rows())
    assert [(row["image"], row["label"], row["text"]) for row in rows] == [
        ("cat/a.jpg", "cat", "a cat on a mat"), ("dog/b.png", "dog", "")]
    assert len(source.ignored) == 3
    assert any("notes.md" in item for item in source.ignored)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("missing.csv", None, "does not exist"),
     ("m.xlsx", "x", "unknown format"),
     ("m.csv", "text,label\na,b\n", r"lacks the required image column;"),
     ("m.csv", "text,text,image,label\na,b,x.png,cat\n", "more than one column named text;")],
)
def test_unusable_sources_raise_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(SourceError, match=message):
        open_source(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_are_streamed_lazily(tmp_path, suffix):
    """Rows come from the file as it is read: cut the file short after the first row, and a streaming
    reader sees the cut; one that read everything first would still yield all 50,000 rows."""
    path = tmp_path / f"m{suffix}"
    with open(path, "w") as handle:
        if suffix == ".csv":
            handle.write("text,image,label\n")
            handle.writelines(f"t{index},i.png,c\n" for index in range(50_000))
        else:
            handle.writelines(json.dumps({"text": f"t{index}", "image": "i.png", "label": "c"}) + "\n"
                              for index in range(50_000))
    rows = open_source(path).rows()
    assert next(rows)["text"] == "t0"
    os.truncate(path, 200_000)  # about a tenth of the file
    assert sum(1 for _ in rows) < 20_000


def test_csv_blank_lines_are_skipped_and_huge_fields_quarantined(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,image,label\na,x.png,cat\n\n" + '"' + "y" * 200_000 + '",x.png,cat\nb,y.png,dog\n')
    rows = rows_of(path)
    assert [row["reason"] for row in rows] == [None, Reason.ROW_MALFORMED, None]
    assert rows[2]["text"] == "b"


def test_deeply_nested_json_is_a_malformed_row(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    (row,) = rows_of(path)
    assert row["reason"] == Reason.ROW_MALFORMED


def test_a_parquet_manifest_with_a_repeated_column_is_refused(tmp_path):
    table = pa.table([["a"], ["b"], ["x.png"], ["cat"]], names=["text", "text", "image", "label"])
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(SourceError, match="more than one column named text"):
        open_source(tmp_path / "m.parquet")


@pytest.mark.parametrize("make", ["fifo", "device"])
def test_a_manifest_that_is_not_a_regular_file_is_refused_unread(tmp_path, make):
    """A FIFO would block the reader forever, /dev/zero would fill memory: refused before a byte is read."""
    path = tmp_path / "m.csv"
    if make == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(SourceError, match="is not a regular file"):
        open_source(path)


def test_an_empty_folder_is_refused_as_unusable_input(tmp_path, monkeypatch, capsys):
    from tests.fixtures.cli import run_main

    (tmp_path / "source" / "cat").mkdir(parents=True)  # folders, no files
    with pytest.raises(SourceError, match="is an empty folder; put LABEL/FILE files under it"):
        open_source(tmp_path / "source")
    code, _, err = run_main(["ingest", str(tmp_path / "source"), "--data", str(tmp_path / "data")], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "empty folder" in err  # unusable input, as the README says


def test_a_sidecar_that_is_a_fifo_is_not_opened(tmp_path):
    save(gradient(), tmp_path / "cat" / "a.png", "PNG")
    os.mkfifo(tmp_path / "cat" / "a.txt")
    (row,) = rows_of(tmp_path)  # opening the FIFO would wait for a writer forever
    assert row["reason"] == Reason.TEXT_INVALID and "not a regular file" in row["detail"]


def test_sidecar_symlink_out_of_root_is_not_read(tmp_path):
    (tmp_path / "secret.txt").write_text("do not ingest me")
    save(gradient(), tmp_path / "root" / "cat" / "a.png", "PNG")
    (tmp_path / "root" / "cat" / "a.txt").symlink_to(tmp_path / "secret.txt")
    (row,) = rows_of(tmp_path / "root")
    assert row["reason"] == Reason.TEXT_INVALID and row["text"] == "" and "outside" in row["detail"]


@pytest.mark.parametrize(("line", "fields"), [("a,x.png,cat," + ",".join("z" * 3 for _ in range(10_000)), 10_003),
                                              ("a,x.png", 2)])
def test_a_csv_row_with_more_or_fewer_fields_than_the_header_is_malformed(tmp_path, line, fields):
    path = tmp_path / "m.csv"
    path.write_text(f"text,image,label\n{line}\nb,y.png,dog\n")
    rows = rows_of(path)
    assert rows[0]["reason"] == Reason.ROW_MALFORMED and f"{fields} fields, the header 3" in rows[0]["detail"]
    assert rows[1]["reason"] is None


def test_other_manifest_columns_are_kept_as_one_json_object(tmp_path):
    csv_rows = rows_of(write_manifest_csv(
        tmp_path / "m.csv", [{"text": "a", "image": "x.png", "label": "cat", "region": "eu", "device": ""}],
        columns=("text", "image", "label", "region", "device")))
    assert json.loads(csv_rows[0]["extra"]) == {"region": "eu"}  # an empty cell is no value
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"text": "a", "image": "x.png", "label": "cat", "shots": 3, "meta": {"a": 1}}) + "\n"
                    + json.dumps({"text": "b", "image": "x.png", "label": "cat"}) + "\n")
    kept, none = rows_of(path)
    assert json.loads(kept["extra"]) == {"shots": 3} and none["extra"] is None  # nested values are not kept
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"text": ["a"], "image": ["x.png"], "label": ["cat"], "score": [0.5],
                             "blob": pa.array([b"\x00" * 10], pa.binary())}), path)
    assert json.loads(rows_of(path)[0]["extra"]) == {"score": "0.5"}  # no bytes columns
