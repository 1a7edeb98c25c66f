"""The source watcher: one report per settled burst of files, nothing for an unchanged source."""

import os

from mmpipe.ingest.watch import poll


def test_a_burst_of_files_is_reported_once_after_it_settles(tmp_path):
    source, data = tmp_path / "source", tmp_path / "data"
    source.mkdir()
    manifest = source / "manifest.csv"
    assert poll(manifest, data) == ("unchanged", None)  # nothing there yet
    assert poll(manifest, data) == ("unchanged", None)
    manifest.write_text("text,image,label\n")
    assert poll(manifest, data) == ("arriving", None)
    (source / "a.png").write_bytes(b"a")
    assert poll(manifest, data) == ("arriving", None)
    (source / "b.png").write_bytes(b"b")
    assert poll(manifest, data) == ("arriving", None)
    status, change = poll(manifest, data)  # unchanged since the last look: settled
    assert status == "changed" and change["added"] == 3 and change["files"] == 3
    assert change["source"] == str(manifest.absolute()) and "a.png" in change["examples"]
    assert poll(manifest, data) == poll(manifest, data) == ("unchanged", None)  # reported once


def test_changed_and_removed_files_are_counted_and_temporary_files_ignored(tmp_path):
    source, data = tmp_path / "source", tmp_path / "data"
    source.mkdir()
    (source / "a.png").write_bytes(b"a")
    (source / "b.png").write_bytes(b"b")
    poll(source, data)
    assert poll(source, data)[1]["added"] == 2
    (source / "a.png").write_bytes(b"A, rewritten")
    (source / "b.png").unlink()
    (source / ".upload.tmp").write_bytes(b"partial")
    poll(source, data)
    _, change = poll(source, data)
    assert (change["added"], change["changed"], change["removed"], change["files"]) == (0, 1, 1, 1)


def test_mmpipe_output_inside_the_source_folder_is_not_new_data(tmp_path):
    """A manifest next to ./mmpipe-data must not retrigger itself with every run's output."""
    manifest, data, runs = tmp_path / "manifest.csv", tmp_path / "mmpipe-data", tmp_path / "mmpipe-runs"
    manifest.write_text("text,image,label\n")
    poll(manifest, data, exclude=(runs,))
    assert poll(manifest, data, exclude=(runs,))[1]["files"] == 1
    (data / "shards").mkdir(parents=True)
    (data / "shards" / "x.parquet").write_bytes(b"x")
    runs.mkdir()
    (runs / "run.json").write_text("{}")
    assert poll(manifest, data, exclude=(runs,)) == poll(manifest, data, exclude=(runs,)) == ("unchanged", None)


def test_a_touched_file_with_the_same_content_is_not_a_change(tmp_path):
    source, data = tmp_path / "source", tmp_path / "data"
    source.mkdir()
    (source / "a.png").write_bytes(b"a")
    poll(source, data)
    poll(source, data)
    os.utime(source / "a.png", ns=(1, 1))  # rehashed (mtime moved), same bytes
    assert poll(source, data) == poll(source, data) == ("unchanged", None)
