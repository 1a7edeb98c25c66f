"""The source watcher: one report per settled burst of files, nothing for an unchanged source."""

import os
import threading
from pathlib import Path

import pytest

from mmpipe.config import load_config
from mmpipe.ingest.watch import poll, watch_sources


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


class Script(threading.Event):
    """A stop event that, between two rounds of polls, does the next step of a script; it stops the watcher when
    the script has run out (no sleeping, so the test is exact)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = list(steps)

    def wait(self, timeout=None):
        if self.steps:
            self.steps.pop(0)()
        else:
            self.set()
        return self.is_set()


def watched(tmp_path, sources):
    return load_config(None, {"data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                              "serve.sources": [str(source) for source in sources]}, environ={})


def test_the_watcher_announces_each_settled_burst_exactly_once_per_source(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    nothing = lambda: None  # noqa: E731 - a round in which no file arrives
    script = [lambda: (one / "manifest.csv").write_text("text,image,label\n"),
              lambda: (one / "a.png").write_bytes(b"a"),  # still arriving: no announcement yet
              lambda: (two / "b.png").write_bytes(b"b"), nothing, nothing, nothing,
              lambda: (one / "c.png").write_bytes(b"c"), nothing, nothing, nothing]
    announced, complaints = [], []
    watch_sources(watched(tmp_path, [one / "manifest.csv", two]), announced.append, Script(script),
                  lambda source, error: complaints.append(source))
    assert [(Path(change["source"]).name, change["added"]) for change in announced] == [
        ("manifest.csv", 2), ("two", 1), ("manifest.csv", 1)]
    assert complaints == []


def test_the_watcher_complains_about_a_source_it_cannot_read_and_keeps_watching(tmp_path):
    (tmp_path / "data").write_text("a file where the data dir should be")  # no room for the watch state
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.png").write_bytes(b"a")
    complaints = []
    watch_sources(watched(tmp_path, [source]), lambda change: pytest.fail("nothing can be announced"),
                  Script([lambda: None]), lambda where, error: complaints.append((where, type(error))))
    assert complaints == [(str(source), NotADirectoryError)] * 2  # two rounds: it did not stop at the first


def test_a_change_whose_announcement_failed_is_announced_again(tmp_path):
    """Recorded as reported only once announced: a down server or a kill in between loses nothing."""
    source, data = tmp_path / "source", tmp_path / "data"
    source.mkdir()
    (source / "a.png").write_bytes(b"a")
    poll(source, data)

    def server_down(change):
        raise OSError("connection refused")

    with pytest.raises(OSError):
        poll(source, data, announce=server_down)
    announced = []
    assert poll(source, data, announce=announced.append)[0] == "changed"
    assert [change["added"] for change in announced] == [1]
    assert poll(source, data, announce=announced.append) == ("unchanged", None) and len(announced) == 1


def test_a_bucket_prefix_is_watched_by_listing_with_the_same_settling(bucket, tmp_path):
    manifest, data = bucket.url("drop/manifest.csv"), tmp_path / "data"
    put = lambda key, body: bucket.fs.pipe_file(f"{bucket.name}/drop/{key}", body)  # noqa: E731
    assert poll(manifest, data) == ("unchanged", None)  # nothing there yet
    put("manifest.csv", b"text,image,label\n")
    put("a.png", b"a")
    assert poll(manifest, data) == ("arriving", None)
    put(".upload-part", b"partial")  # an uploader's temporary object
    status, change = poll(manifest, data)
    assert status == "changed" and (change["added"], change["files"]) == (2, 2)
    assert change["source"] == manifest
    assert poll(manifest, data) == ("unchanged", None)
    put("a.png", b"A, replaced")  # same key, new ETag
    poll(manifest, data)
    assert poll(manifest, data)[1]["changed"] == 1


def test_a_bucket_data_dir_keeps_the_watchers_state_on_this_machine(bucket):
    from mmpipe.storage.mirror import mirror_dir

    manifest = bucket.url("drop/manifest.csv")
    bucket.fs.pipe_file(f"{bucket.name}/drop/manifest.csv", b"text,image,label\n")
    data = bucket.url("data")
    poll(manifest, data)
    assert poll(manifest, data)[0] == "changed"
    assert list((mirror_dir(data) / "watch").glob("*.json"))
    bucket.fs.invalidate_cache()
    assert not bucket.fs.exists(f"{bucket.name}/data")  # the watcher wrote nothing into the bucket


def test_the_watcher_ignores_its_own_runs_and_data_dirs_inside_a_source(tmp_path):
    """A source folder holding mmpipe's runs and data dirs must not announce every run's output as new data."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.png").write_bytes(b"a")
    config = load_config(None, {"data_dir": str(source / "mmpipe-data"), "runs_dir": str(source / "mmpipe-runs"),
                                "serve.sources": [str(source)]}, environ={})

    def write(path, content):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    nothing = lambda: None  # noqa: E731 - a round in which no file arrives
    script = [nothing,  # a.png settles: announced
              lambda: write(config.runs_dir / "r1" / "run.json", "{}"), nothing,
              lambda: write(config.runs_dir / "r1" / "metrics.json", "{}"), nothing,
              lambda: write(config.data_dir / "shards" / "x.parquet", "x"), nothing]
    announced = []
    watch_sources(config, announced.append, Script(script), lambda where, error: pytest.fail(f"{where}: {error}"))
    assert [(change["added"], change["files"]) for change in announced] == [(1, 1)]


def test_a_change_stays_pending_until_a_run_over_it_completes_and_a_restarted_watcher_announces_it_again(tmp_path):
    """At least once: the run the event started was killed (or the server lost the event); the watcher, restarted,
    announces the change again; once a run over it completed, never again."""
    from mmpipe.ingest.watch import complete_pending, pending_change

    source = tmp_path / "source"
    source.mkdir()
    (source / "a.png").write_bytes(b"a")
    config = watched(tmp_path, [source])
    announced = []
    watch_sources(config, announced.append, Script([lambda: None, lambda: None]), lambda *problem: None)
    assert [change.get("again") for change in announced] == [None]  # announced once, as new
    started_on = pending_change(source, config.data_dir)["fingerprint"]  # a run starts on it ... and is killed
    again = []
    watch_sources(config, again.append, Script([lambda: None]), lambda *problem: None)  # the watcher restarts
    assert [(change["again"], change["kind"], change["fingerprint"]) for change in again] == [
        (True, "train", started_on)]
    (source / "b.png").write_bytes(b"b")  # more data lands while the next run works on the first change
    watch_sources(config, again.append, Script([lambda: None, lambda: None]), lambda *problem: None)
    assert complete_pending(source, config.data_dir, started_on) is False  # the newer change stays pending
    newest = pending_change(source, config.data_dir)["fingerprint"]
    assert complete_pending(source, config.data_dir, newest) is True
    after = []
    watch_sources(config, after.append, Script([lambda: None]), lambda *problem: None)
    assert after == [] and pending_change(source, config.data_dir) is None


def test_data_to_score_is_watched_with_the_source_whose_champion_scores_it(tmp_path):
    from mmpipe.errors import ConfigError

    train, inbox = tmp_path / "train", tmp_path / "inbox"
    train.mkdir()
    inbox.mkdir()
    (inbox / "a.png").write_bytes(b"a")
    config = load_config(None, {"data_dir": str(tmp_path / "data"), "serve.sources": [str(train)],
                                "serve.score_sources": [str(inbox)], "serve.retrain_on": "drift"}, environ={})
    announced = []
    watch_sources(config, announced.append, Script([lambda: None, lambda: None]), lambda *problem: None)
    assert [(change["kind"], change["model_source"]) for change in announced] == [("score", str(train))]
    several = load_config(None, {"serve.sources": [str(train), str(tmp_path / "other")],
                                 "serve.score_sources": [str(inbox)]}, environ={})
    with pytest.raises(ConfigError, match="say which source's champion scores"):
        watch_sources(several, announced.append, Script([]), lambda *problem: None)
