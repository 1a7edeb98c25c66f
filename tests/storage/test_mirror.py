"""A data dir or run store in a bucket (a real S3 API on loopback): published files first and pointers last,
pulled back as the bucket has it, and one writer at a time through the bucket's conditional writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from mmpipe.config import Config
from mmpipe.errors import StorageError
from mmpipe.files import FAULT_ENV
from mmpipe.storage import mirror
from mmpipe.storage.mirror import (
    LOCK_OBJECT,
    mirror_dir,
    on_local_disk,
    publish,
    published,
    pull,
    readable,
    writable,
)
from mmpipe.storage.urls import CACHE_ENV


def objects(bucket, prefix: str) -> dict[str, bytes]:
    root = f"{bucket.name}/{prefix}/"
    bucket.fs.invalidate_cache()
    return {name[len(root):]: bucket.fs.cat_file(name) for name in bucket.fs.find(root)}


def test_a_writer_publishes_what_it_wrote_but_not_its_cache_locks_or_temporaries(bucket):
    url = bucket.url("data")
    with writable(url) as local:
        (local / "shards").mkdir()
        (local / "shards" / "a.parquet").write_bytes(b"shard")
        (local / "dataset.json").write_text("{}")
        (local / "cache" / "chunks").mkdir(parents=True)
        (local / "cache" / "chunks" / "c.parquet").write_bytes(b"this machine's")
        (local / ".lock").write_text("")
        (local / "shards" / ".a.parquet.x1.tmp").write_bytes(b"half")
        assert LOCK_OBJECT in objects(bucket, "data")  # held while it works
    assert objects(bucket, "data") == {"shards/a.parquet": b"shard", "dataset.json": b"{}"}  # lock released


class Recording:
    """The real filesystem, with each `put` call's destinations noted in order."""

    def __init__(self, fs):
        self.fs, self.puts = fs, []

    def put(self, sources, destinations):
        self.puts.append([destination.rsplit("/", 1)[-1] for destination in destinations])
        return self.fs.put(sources, destinations)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_pointers_are_published_after_every_file_they_name_and_removals_after_them(bucket, tmp_path):
    root = f"{bucket.name}/runs"
    local = tmp_path / "mirror"
    (local / "r1").mkdir(parents=True)
    (local / "r1" / "old.bin").write_bytes(b"old")
    publish(bucket.fs, root, local)
    for name, data in [("model.keras", b"m"), ("report.html", b"r"), ("metrics.json", b"{}"), ("run.json", b"{}")]:
        (local / "r1" / name).write_bytes(data)
    (local / "champion.json").write_text("{}")
    (local / "r1" / "old.bin").unlink()

    recording = Recording(bucket.fs)
    publish(recording, root, local, pointers=("metrics.json", "run.json", "champion.json"))
    assert recording.puts == [["model.keras", "report.html"], ["metrics.json"], ["run.json"], ["champion.json"]]
    assert set(objects(bucket, "runs")) == {"r1/model.keras", "r1/report.html", "r1/metrics.json", "r1/run.json",
                                            "champion.json"}
    recording.puts.clear()
    publish(recording, root, local)
    assert recording.puts == []  # nothing changed: nothing sent


def test_a_pull_takes_the_buckets_changes_and_keeps_what_a_killed_writer_never_published(bucket, tmp_path,
                                                                                      monkeypatch):
    url = bucket.url("data")
    with writable(url) as local:
        (local / "keep.txt").write_text("v1")
        (local / "gone.txt").write_text("v1")
    # Another machine (its own cache) changes one file and deletes another.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "other-machine"))
    with writable(url) as other:
        assert (other / "keep.txt").read_text() == "v1"
        (other / "keep.txt").write_text("v2, from elsewhere")
        (other / "gone.txt").unlink()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mmpipe-cache"))
    (local / "unpublished.txt").write_text("a killed run's file")  # written, never published
    with writable(url) as again:
        assert again == local
        assert (again / "keep.txt").read_text() == "v2, from elsewhere"
        assert not (again / "gone.txt").exists()
        assert (again / "unpublished.txt").is_file()
    assert objects(bucket, "data") == {"keep.txt": b"v2, from elsewhere", "unpublished.txt": b"a killed run's file"}


def test_a_reader_copies_only_what_it_wants_and_takes_no_lock(bucket):
    with writable(bucket.url("runs")) as local:
        (local / "r1").mkdir()
        (local / "r1" / "run.json").write_text('{"a": 1}')
        (local / "r1" / "model.keras").write_bytes(b"big")
        with readable(bucket.url("runs"), lambda relative: relative.endswith(".json")) as copy:
            assert not (copy / "r1").exists()  # not published yet: a reader never sees a writer's work
    with readable(bucket.url("runs"), lambda relative: relative.endswith(".json")) as copy:
        assert sorted(str(path.relative_to(copy)) for path in copy.rglob("*")
                      if path.is_file() and not path.name.startswith(".")) == ["r1/run.json"]


def test_a_second_writer_waits_for_the_first(bucket, monkeypatch):
    monkeypatch.setattr(mirror, "LOCK_POLL_S", 0.05)
    url, events, said = bucket.url("data"), [], []
    first_in, release = threading.Event(), threading.Event()

    def first():
        with writable(url):
            events.append("first in")
            first_in.set()
            release.wait(10)
            events.append("first out")

    def second():
        first_in.wait(10)
        with other_machine_writer(url, said):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(10)
    until(lambda: said, "the second writer to find the lock held")  # it waits: now the first may finish
    release.set()
    for thread in threads:
        thread.join(20)
    assert events == ["first in", "first out", "second in"]
    assert len(said) == 1 and f"{url} is being written by pid {os.getpid()}" in said[0]


def until(condition, what: str, timeout: float = 30) -> None:
    """Poll `condition` with a deadline: another thread's progress, not a fixed sleep that load can outlast."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def other_machine_writer(url, said):
    """The bucket's writer lock as another machine takes it (this machine's mirror lock would stop it first)."""
    from mmpipe.storage.urls import open_url

    fs, root = open_url(url)
    return mirror._store_lock(fs, root, url, said.append)


def test_the_lock_of_a_writer_that_died_is_taken_over(bucket):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "token": "t", "since": "earlier"}
    bucket.fs.pipe_file(f"{bucket.name}/data/{LOCK_OBJECT}", json.dumps(holder).encode())
    said = []
    with writable(bucket.url("data"), say=said.append):
        pass
    assert said == [f"took over the lock of {bucket.url('data')}: its writer (pid {holder['pid']} on "
                    f"{holder['host']} since earlier) is gone"]


def test_a_lock_not_refreshed_in_time_is_taken_over_and_a_fresh_one_is_not(bucket, monkeypatch):
    holder = {"host": "another-machine", "pid": 1, "token": "t", "since": "earlier"}
    bucket.fs.pipe_file(f"{bucket.name}/data/{LOCK_OBJECT}", json.dumps(holder).encode())
    monkeypatch.setattr(mirror, "LOCK_POLL_S", 0.05)
    said = []
    waiting = threading.Thread(target=lambda: writable(bucket.url("data"), say=said.append).__enter__(), daemon=True)
    waiting.start()
    until(lambda: said, "the writer to find the lock held")
    assert waiting.is_alive() and "is being written by pid 1 on another-machine" in said[0]  # a fresh lock holds
    monkeypatch.setattr(mirror, "LOCK_STALE_S", 0.0)
    waiting.join(10)
    assert not waiting.is_alive() and said[-1].startswith("took over the lock")


def test_of_writers_racing_for_the_lock_exactly_one_wins(bucket):
    lock, wins, barrier = f"{bucket.name}/race", [], threading.Barrier(6)

    def race(number):
        barrier.wait()
        try:
            mirror._create(bucket.fs, lock, str(number).encode())
            wins.append(number)
        except FileExistsError:
            pass

    threads = [threading.Thread(target=race, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and bucket.fs.cat_file(lock) == str(wins[0]).encode()


def test_a_refused_store_is_one_line_naming_the_credentials(denying_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(StorageError, match=r"cannot lock s3://secret/data for writing: access to .* was denied "
                                           r".*AWS_ACCESS_KEY_ID") as raised, writable("s3://secret/data"):
        pass
    assert "\n" not in str(raised.value)


def test_a_config_works_on_mirrors_and_its_summaries_name_the_bucket(bucket):
    config = Config(data_dir=bucket.url("data"), runs_dir=bucket.url("runs"))
    with on_local_disk(config) as local:
        assert local.data_dir == mirror_dir(bucket.url("data")) and local.runs_dir == mirror_dir(bucket.url("runs"))
        summary = {"run_dir": str(local.runs_dir / "r1"), "notes": [f"see {local.data_dir}/contracts"]}
        assert published(summary, local, config) == {"run_dir": f"{bucket.url('runs')}/r1",
                                                     "notes": [f"see {bucket.url('data')}/contracts"]}
    assert pull(bucket.fs, f"{bucket.name}/data", local.data_dir) == 0


class Failing:
    """The real filesystem, except that `method` raises `error`, as a store or the network to it can."""

    def __init__(self, fs, method: str, error: Exception):
        self.fs, self.method, self.error = fs, method, error

    def __getattr__(self, name):
        if name != self.method:
            return getattr(self.fs, name)

        def fail(*_args, **_kwargs):
            raise self.error

        return fail


def connection_refused():
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


@pytest.mark.parametrize(("method", "error", "says"), [
    ("get", lambda: OSError("disk quota exceeded"), "cannot use {url}: OSError: disk quota exceeded"),
    ("put", lambda: OSError("the connection was reset"), "cannot use {url}: OSError: the connection was reset"),
    ("put", connection_refused, "cannot use {url}: EndpointConnectionError: Could not connect to the endpoint URL"),
], ids=["pull-oserror", "publish-oserror", "publish-botocore"])
def test_a_store_failing_a_pull_or_publish_is_one_line_naming_it_not_silence(bucket, monkeypatch, method, error,
                                                                             says):
    """A mirror that silently missed the store's files, or never published its own, would look like success."""
    url = bucket.url("data")
    with writable(url) as local:
        (local / "dataset.json").write_text("{}")
    (local / "dataset.json").write_text('{"changed": true}')  # to publish
    bucket.fs.pipe_file(f"{bucket.name}/data/shard.parquet", b"new in the store")  # to pull
    real_open_url = mirror.open_url

    def open_failing(url):
        fs, root = real_open_url(url)
        return Failing(fs, method, error()), root

    monkeypatch.setattr(mirror, "open_url", open_failing)
    with pytest.raises(StorageError) as raised, writable(url):
        pass
    message = str(raised.value)
    assert message.startswith(says.format(url=url)) and "\n" not in message
    if method == "put":
        assert f"the local copy in {local} is whole: run the command again to publish it" in message
    assert LOCK_OBJECT not in objects(bucket, "data")  # a failed writer still lets the next one in

PUBLISH_A_VERSION = """
import json, sys
from mmpipe.storage.mirror import writable
url, version = sys.argv[1], sys.argv[2]
with writable(url, say=print, pointers=("dataset.json",)) as local:
    (local / "shards").mkdir(exist_ok=True)
    for old in (local / "shards").iterdir():
        old.unlink()
    names = [f"shards/{version}-{n}.parquet" for n in range(3)]
    for name in names:
        (local / name).write_text(version)
    (local / "dataset.json").write_text(json.dumps({"version": version, "shards": names}))
"""


def publish_a_version(url: str, version: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **({FAULT_ENV: str(kill_at)} if kill_at else {})}
    return subprocess.run([sys.executable, "-c", PUBLISH_A_VERSION, url, version], env=environment,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a writer process per kill point
def test_a_writer_killed_anywhere_leaves_a_whole_version_and_the_next_one_finishes_its_work(bucket):
    url, killed_at = bucket.url("data"), []
    assert publish_a_version(url, "v0").returncode == 0
    for point in range(1, 20):
        version, before = f"v{point}", f"v{point - 1}"
        done = publish_a_version(url, version, kill_at=point)
        if done.returncode == 0:
            break  # past the last write
        assert done.returncode == -9, done.stderr[-2000:]
        killed_at.append(point)
        stored = objects(bucket, "data")
        pointer = json.loads(stored["dataset.json"])
        assert pointer["version"] in {before, version}
        assert all(stored[name] == pointer["version"].encode() for name in pointer["shards"])  # whole, one version
        again = publish_a_version(url, version)  # the next writer: takes over the lock, repairs, publishes
        assert again.returncode == 0 and "took over the lock" in again.stdout, again.stderr[-2000:]
        stored = objects(bucket, "data")
        assert set(stored) == {"dataset.json", *(f"shards/{version}-{n}.parquet" for n in range(3))}
    assert len(killed_at) >= 5  # pull's state, the files, the pointer, the removals, the state after


class Dying:
    """The real filesystem until `dead` is set; from then on every call fails as a dead endpoint's do (counted)."""

    def __init__(self, fs):
        self.fs, self.dead, self.failed = fs, False, []

    def __getattr__(self, name):
        real = getattr(self.fs, name)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            if self.dead:
                self.failed.append(name)
                raise connection_refused()
            return real(*args, **kwargs)

        return call


def test_an_endpoint_that_dies_mid_work_is_the_one_line_storage_error(bucket, monkeypatch):
    """Once the endpoint is gone, refreshing the lock and releasing it fail too: neither may print a thread's
    traceback or hide the publish's StorageError behind its own error."""
    url = bucket.url("data")
    real_fs, root = mirror.open_url(url)
    dying, crashed = Dying(real_fs), []
    monkeypatch.setattr(mirror, "open_url", lambda _url: (dying, root))
    monkeypatch.setattr(mirror, "LOCK_REFRESH_S", 0.01)
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    with pytest.raises(StorageError) as raised, writable(url) as local:
        (local / "dataset.json").write_text("{}")
        dying.dead = True
        until(lambda: dying.failed.count("pipe_file") >= 2, "the lock's keeper to refresh against the dead endpoint")
    message = str(raised.value)
    assert message.startswith(f"cannot use {url}: EndpointConnectionError") and "run the command again" in message
    assert crashed == []
