"""A remote data dir or run store, worked on through a local mirror and published back.

The stages write local files atomically (mmpipe.files); an object store has no rename, but each PUT
is atomic per object. So a writer (`writable`) takes the store's lock, pulls what changed into a
mirror under MMPIPE_CACHE_DIR, lets the stage work on the mirror, and publishes: every file first,
the pointers (dataset.json; metrics.json, run.json, champion.json) last, and removes what the stage
removed only after them. A reader of the bucket sees the old pointers with the old files, or the new with the new.

The lock is an object created with the store's conditional write (S3 If-None-Match, GCS generation
match, Azure If-None-Match): two writers, on any machines, never work on one store at once. The
holder refreshes it while it works; one not refreshed for LOCK_STALE_S is a dead writer's and is
taken over. A writer killed before publishing leaves its mirror; the next writer on that machine
keeps what the killed one changed there (new, rewritten and deleted files) and publishes it, and
takes the store's version of everything the store changed since. So delete a mirror whole, never
in part: a file missing from a mirror is a deletion to publish.

Readers (`readable`) pull what they need into a temporary folder and take no lock: they may run
while a writer works.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.errors import StorageError
from mmpipe.files import fault_point, hold_lock, stable_hash, write_json_atomic
from mmpipe.storage.urls import (
    CACHE_ENV,
    is_url,
    list_objects,
    object_version,
    open_url,
    storage_failure,
    storage_problem,
    url_name,
)

LOCK_OBJECT = ".mmpipe-writer.json"
# A holder rewrites its lock this often; a lock older than LOCK_STALE_S belongs to a writer that died.
LOCK_REFRESH_S = 30.0
LOCK_STALE_S = 300.0
LOCK_POLL_S = 2.0
_STATE_FILE = ".mmpipe-mirror.json"  # in the mirror: relative path -> [size, mtime_ns, remote version]
# Per machine, never published: the chunk cache (keyed by this machine's view of the source) and the
# watcher's state; hidden files (locks, temporaries) are local too.
LOCAL_FOLDERS = ("cache", "watch")

Say = Callable[[str], object]


def cache_root() -> Path:
    """Where mmpipe keeps per-machine copies: $MMPIPE_CACHE_DIR, else ~/.cache/mmpipe."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmpipe")


def mirror_dir(url: str) -> Path:
    """The local working copy of a remote store: one per URL, per machine."""
    return cache_root() / "mirrors" / f"{url_name(url)}-{stable_hash(url.rstrip('/'), 12)}"


def is_local_only(relative: str) -> bool:
    parts = relative.split("/")
    return parts[0] in LOCAL_FOLDERS or any(part.startswith(".") for part in parts)


@contextlib.contextmanager
def on_local_disk(config: Config, say: Say = lambda line: None) -> Iterator[Config]:
    """`config` with a bucket data dir and run store replaced by their mirrors (see `writable`), for one
    command or pipeline; a config of local folders comes back as it is."""
    from mmpipe.ingest.version import DATASET_FILE
    from mmpipe.runs.record import RunDir
    from mmpipe.runs.store import CHAMPION_FILE

    # The files that say another file is complete, in the order they are published (after every other file).
    pointers = {"data_dir": (DATASET_FILE,), "runs_dir": (RunDir.METRICS, RunDir.RECORD, CHAMPION_FILE)}
    with contextlib.ExitStack() as stack:
        local = {name: stack.enter_context(writable(getattr(config, name), say, pointers[name]))
                 for name in ("data_dir", "runs_dir") if is_url(getattr(config, name))}
        yield config.model_copy(update=local) if local else config


def published(value: Any, local: Config, config: Config) -> Any:
    """`value` (a summary: dicts, lists, strings) with the mirrors' paths in `local` written as the URLs in
    `config` they are published to: what a user reads names the bucket, not this machine's cache."""
    swaps = [(str(getattr(local, name)), str(getattr(config, name)).rstrip("/")) for name in ("data_dir", "runs_dir")
             if getattr(local, name) != getattr(config, name)]
    if not swaps:
        return value
    if isinstance(value, str):
        for mirror, url in swaps:
            value = value.replace(mirror, url)
        return value
    if isinstance(value, dict):
        return {key: published(item, local, config) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [published(item, local, config) for item in value]
    return value


@contextlib.contextmanager
def writable(url: str, say: Say = lambda line: None, pointers: tuple[str, ...] = ()) -> Iterator[Path]:
    """The mirror of the store at `url`, pulled, locked against every other writer, and published on the way out
    (also when the work failed: what a stage wrote is whole, and a failed run's record belongs in the store).
    Files named as in `pointers` are published after all others, in that order.

    Raises:
        StorageError: the store cannot be reached, read or written (the message says which and why).
    """
    fs, root = open_url(url)
    local = mirror_dir(url)
    local.mkdir(parents=True, exist_ok=True)
    waiting = lambda: say(f"another mmpipe command on this machine is using {url}: waiting for it")  # noqa: E731
    with hold_lock(local / ".mirror.lock", on_wait=waiting), _store_lock(fs, root, url, say):
        _guarded(url, lambda: pull(fs, root, local))
        try:
            yield local
        finally:
            _guarded(url, lambda: publish(fs, root, local, pointers),
                     after=f"; the local copy in {local} is whole: run the command again to publish it")


@contextlib.contextmanager
def readable(url: str, wanted: Callable[[str], bool] = lambda relative: True) -> Iterator[Path]:
    """A temporary local copy of the files of `url` that `wanted` accepts (relative paths); no lock taken."""
    fs, root = open_url(url)
    with tempfile.TemporaryDirectory(prefix="mmpipe-read-") as folder:
        _guarded(url, lambda: pull(fs, root, Path(folder), wanted))
        yield Path(folder)


def _guarded(url: str, work: Callable[[], object], after: str = "") -> None:
    try:
        work()
    except Exception as error:
        if not storage_failure(error):
            raise
        raise StorageError(storage_problem(url, error) + after) from None


def remote_files(fs, root: str) -> dict[str, dict[str, Any]]:
    """{relative path: fsspec info} of every object under `root` that a mirror holds."""
    return {relative: info for relative, info in list_objects(fs, root).items() if not is_local_only(relative)}


def pull(fs, root: str, local: Path, wanted: Callable[[str], bool] = lambda relative: True) -> int:
    """Bring `local` up to the store, three ways: what the store changed since the last pull (or never had here)
    is downloaded and what it deleted is deleted; what only this side changed since (a killed writer's new,
    rewritten or deleted files) stays, for the next publish. Returns the count downloaded."""
    state = _read_state(local)
    remote = {relative: info for relative, info in remote_files(fs, root).items() if wanted(relative)}
    stale = [relative for relative, info in remote.items()
             if relative not in state or state[relative][2] != object_version(info)]
    temporaries = [local / f".{relative.replace('/', '%')}.{uuid.uuid4().hex[:8]}.tmp" for relative in stale]
    if stale:
        fs.get([f"{root.rstrip('/')}/{relative}" for relative in stale], [str(path) for path in temporaries])
    for relative, temporary in zip(stale, temporaries, strict=True):
        final = local / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, final)
        state[relative] = [*_stat(final), object_version(remote[relative])]
    for relative in [relative for relative in state if relative not in remote]:
        (local / relative).unlink(missing_ok=True)  # deleted in the store since it was last pulled
        del state[relative]
    _write_state(local, state)
    return len(stale)


def publish(fs, root: str, local: Path, pointers: tuple[str, ...] = ()) -> int:
    """Upload every file of `local` the store does not have as it is here, files named in `pointers` last (in
    that order); then delete from the store what was deleted here. Returns the count uploaded."""
    state = _read_state(local)
    files = sorted(str(path.relative_to(local)) for path in local.rglob("*")
                   if path.is_file() and not is_local_only(str(path.relative_to(local))))
    changed = [relative for relative in files if not (relative in state and _same(local, relative, state))]
    waves = [[relative for relative in changed if Path(relative).name not in pointers]]
    for name in pointers:
        waves.append([relative for relative in changed if Path(relative).name == name])
    prefix = root.rstrip("/")
    for wave in waves:
        if wave:
            fault_point("publish", f"{prefix}/{wave[0]}")
            fs.put([str(local / relative) for relative in wave], [f"{prefix}/{relative}" for relative in wave])
    removed = [relative for relative in state if not (local / relative).is_file()]
    if removed:
        fault_point("remove", f"{prefix}/{removed[0]}")
        fs.rm([f"{prefix}/{relative}" for relative in removed])
    if changed or removed:
        listing = remote_files(fs, root)
        state = {relative: [*_stat(local / relative), object_version(listing[relative])]
                 for relative in files if relative in listing}
        _write_state(local, state)
    return len(changed)


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _same(local: Path, relative: str, state: dict[str, list]) -> bool:
    try:
        return _stat(local / relative) == state[relative][:2]
    except OSError:
        return False


def _read_state(local: Path) -> dict[str, list]:
    try:
        return json.loads((local / _STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no state (or a damaged one): every object is compared afresh, nothing is lost


def _write_state(local: Path, state: dict[str, list]) -> None:
    write_json_atomic(local / _STATE_FILE, state, pretty=False)


@contextlib.contextmanager
def _store_lock(fs, root: str, url: str, say: Say) -> Iterator[None]:
    """Hold the store's writer lock (see the module doc), refreshing it until the block ends."""
    lock = f"{root.rstrip('/')}/{LOCK_OBJECT}"
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "since": datetime.now(UTC).isoformat(timespec="seconds")}
    body = json.dumps(mine).encode()
    said = False
    while True:
        try:
            _create(fs, lock, body)
            break
        except FileExistsError:
            holder = _holder(fs, lock)
            if holder is None:
                continue  # released (or taken over) while we looked
            if _abandoned(fs, lock, holder):
                say(f"took over the lock of {url}: its writer ({_who(holder)}) is gone")
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(lock)
                continue
            if not said:
                say(f"{url} is being written by {_who(holder)}: waiting for it (a lock not refreshed for "
                    f"{LOCK_STALE_S:g} s is taken over)")
                said = True
            time.sleep(LOCK_POLL_S)
        except FileNotFoundError:
            raise StorageError(f"cannot write to {url}: its bucket does not exist (create it first)") from None
        except Exception as error:
            if not storage_failure(error):
                raise
            raise StorageError(f"cannot lock {url} for writing: {storage_problem(url, error)}") from None
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_fresh, args=(fs, lock, body, stop), name="mmpipe-store-lock", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        with _store_gone_ignored():  # the lock then goes stale and is taken over; the work's own error is what to say
            if (_holder(fs, lock) or {}).get("token") == mine["token"]:
                fs.rm(lock)


@contextlib.contextmanager
def _store_gone_ignored() -> Iterator[None]:
    """Around lock upkeep: a store that cannot be reached (OSError, or botocore's errors, which are not OSErrors)
    is not this block's to report."""
    try:
        yield
    except Exception as error:
        if not storage_failure(error):
            raise


def _create(fs, path: str, body: bytes) -> None:
    """Write `body` at `path` only if nothing is there (FileExistsError otherwise), atomically where the store
    has conditional writes; else by looking first and checking after (the documented single-writer rule)."""
    try:
        fs.pipe_file(path, body, mode="create")
        return
    except (TypeError, NotImplementedError, ValueError):
        pass  # this filesystem has no conditional create
    if fs.exists(path):
        raise FileExistsError(path)
    fs.pipe_file(path, body)
    if fs.cat_file(path) != body:
        raise FileExistsError(path)


def _holder(fs, lock: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(lock))
    except FileNotFoundError:
        return None
    except ValueError:
        return {"host": "?", "pid": 0, "token": "", "since": "?"}  # a damaged lock is still a lock


def _abandoned(fs, lock: str, holder: dict[str, Any]) -> bool:
    """A lock whose writer is certainly gone: a dead process on this host, or no refresh for LOCK_STALE_S."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and holder["pid"] > 0:
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, someone else's
    try:
        age = (datetime.now(UTC) - fs.modified(lock)).total_seconds()
    except (FileNotFoundError, NotImplementedError, TypeError):
        return False
    return age > LOCK_STALE_S


def _keep_fresh(fs, lock: str, body: bytes, stop: threading.Event) -> None:
    while not stop.wait(LOCK_REFRESH_S):
        with _store_gone_ignored():  # tried again at the next refresh
            fs.pipe_file(lock, body)


def _who(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
