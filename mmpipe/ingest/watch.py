"""Notice new data in a source: fingerprint its files, report a change once the burst has settled.

A poll lists the source's files (a manifest's folder, or a `LABEL/FILE` tree) with sizes and
mtimes, and hashes only files it has not seen with that size and mtime; a bucket prefix is listed
with sizes and ETags. A change is reported when
the listing differs from the last one reported *and* has not moved since the previous poll: files
arriving over several polls give one report, after the last file landed. State lives in
DATA/watch/<source-hash>.json, so the watcher itself can restart at any time.

Triggers are at least once: a reported change stays `pending` in that file until a run over it completes
(`complete_pending`, called by the pipeline and score flows when they finish), and a watcher that starts
announces every pending change again first. A run killed halfway, a server down when its event was sent, a
watcher restarted: the change is announced again rather than lost until the nightly retrain.

`watch_sources` is the watcher: one long-lived loop over the configured sources (in `mmpipe serve`'s
process, or `mmpipe watch` next to a worker) that hands each settled change to a callback; the
caller decides what a change means (the CLI emits a Prefect event), so this module stays plain.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.files import hold_lock, sha256_file, stable_hash, write_json_atomic
from mmpipe.storage.mirror import mirror_dir
from mmpipe.storage.urls import absolute, is_url, list_objects, object_version, open_url, storage_failure

_SHOWN_FILES = 20


def source_root(source: Path) -> Path:
    """The folder whose files make up a source: a manifest's folder, or the tree itself."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def source_key(source: str | Path) -> str:
    return stable_hash(str(absolute(source)))


def fingerprint(source: str | Path, known: dict[str, list] | None = None,
                exclude: tuple[str | Path, ...] = ()) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256]} of every file under the source's root.

    A file whose size and mtime match `known` keeps its known hash instead of being read again.
    Folders in `exclude` (mmpipe's own data and runs dirs, when they sit inside the source's
    folder) are skipped: a run must not look like new data. A manifest that does not exist yet
    has no files. In a bucket the listing says it all: [size, last modified, ETag], nothing is read.
    """
    if is_url(source):
        return _bucket_fingerprint(str(source), exclude)
    source = Path(source)
    if not source.exists():
        return {}
    root, known = source_root(source), known or {}
    skipped = {os.path.realpath(path) for path in exclude if not is_url(path)}
    files = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if os.path.realpath(Path(folder) / name) not in skipped]
        for name in names:
            path = Path(folder) / name
            if name.startswith("."):
                continue  # editors' and uploaders' temporary files
            try:
                stat = path.stat()
            except OSError:
                continue  # deleted while listing
            relative = str(path.relative_to(root))
            previous = known.get(relative)
            same = previous and previous[0] == stat.st_size and previous[1] == stat.st_mtime_ns
            files[relative] = [stat.st_size, stat.st_mtime_ns, previous[2] if same else sha256_file(path)]
    return files


def _bucket_fingerprint(url: str, exclude: tuple[str | Path, ...]) -> dict[str, list]:
    fs, path = open_url(url)
    fs.invalidate_cache()  # a listing cached by an earlier poll would hide what landed since
    try:
        info = fs.info(path.rstrip("/"))
    except FileNotFoundError:
        return {}
    root = path.rstrip("/") if info.get("type") == "directory" else posixpath.dirname(path)
    skipped = tuple(open_url(str(folder))[1].rstrip("/") + "/" for folder in exclude if is_url(folder))
    files = {}
    for relative, entry in list_objects(fs, root).items():
        if f"{root}/{relative}".startswith(skipped) or any(part.startswith(".") for part in relative.split("/")):
            continue
        files[relative] = [entry.get("size"), str(entry.get("LastModified") or entry.get("last_modified")
                                                    or entry.get("updated")), object_version(entry)]
    return files


def state_dir(data_dir: str | Path) -> Path:
    """Where the watcher keeps what it has seen: DATA/watch/ (for a bucket data dir, in its local mirror: the
    state is this machine's)."""
    return (mirror_dir(str(data_dir)) if is_url(data_dir) else Path(data_dir)) / "watch"


def _state_path(source: str | Path, data_dir: str | Path) -> Path:
    return state_dir(data_dir) / f"{source_key(source)}.json"


def _read_state(path: Path) -> dict[str, Any]:
    state = json.loads(path.read_text()) if path.is_file() else {}
    return {"reported": {}, "seen": None, "pending": None, **state}


def pending_change(source: str | Path, data_dir: str | Path) -> dict[str, Any] | None:
    """The change of `source` announced and not yet completed by a run, or None."""
    path = _state_path(source, data_dir)
    if not path.is_file():  # never watched: nothing pending (and no watch state made here)
        return None
    with hold_lock(path.with_suffix(".lock")):
        return _read_state(path)["pending"]


def complete_pending(source: str | Path, data_dir: str | Path, fingerprint: str | None) -> bool:
    """A run over `source` finished: its pending change is done if it is the one the run started on (a change
    that arrived meanwhile stays pending). True when one was completed."""
    path = _state_path(source, data_dir)
    if fingerprint is None or not path.is_file():
        return False
    with hold_lock(path.with_suffix(".lock")):
        state = _read_state(path)
        if (state["pending"] or {}).get("fingerprint") != fingerprint:
            return False
        state["pending"] = None
        write_json_atomic(path, state, pretty=False)
        return True


def announce_pending(sources: list[str], data_dir: str | Path, announce: Callable[[dict[str, Any]], object]) -> int:
    """Announce again every change of `sources` still pending (a watcher starting does this first); how many."""
    again = [change for source in sources if (change := pending_change(source, data_dir)) is not None]
    for change in again:
        announce({**change, "again": True})
    return len(again)


def poll(source: str | Path, data_dir: str | Path, exclude: tuple[str | Path, ...] = (),
         announce: Callable[[dict[str, Any]], object] | None = None) -> tuple[str, dict[str, Any] | None]:
    """One look at `source`: ("changed", summary to announce), ("arriving", None) while files are
    still moving, or ("unchanged", None).

    A change is handed to `announce` before it is recorded as reported: if `announce` raises or the
    process dies in between, the next poll reports it again (announced twice rather than never).
    Prefect's `emit_event` queues the event and sends it from a background worker, so a server that
    is down when it sends is Prefect's to retry, not seen here.
    """
    state_path = _state_path(source, data_dir)
    with hold_lock(state_path.with_suffix(".lock")):  # two watchers must not both report one change
        return _poll(source, data_dir, state_path, exclude, announce)


def _poll(source: str | Path, data_dir: str | Path, state_path: Path, exclude: tuple[str | Path, ...],
          announce: Callable[[dict[str, Any]], object] | None) -> tuple[str, dict[str, Any] | None]:
    state = _read_state(state_path)
    files = fingerprint(source, state["seen"] or state["reported"], (data_dir, *exclude))
    settled = files == state["seen"]
    new = _content(files) != _content(state["reported"])
    status = ("changed" if files else "unchanged") if settled and new else "arriving" if new else "unchanged"
    change = summarize(source, state["reported"], files) if status == "changed" else None
    if change is not None and announce is not None:
        announce(change)
    if change is not None:
        state["pending"] = change  # until a run over it completes
    if settled:
        state["reported"] = files  # a touched file with the same bytes is not new data
    state["seen"] = files
    write_json_atomic(state_path, state, pretty=False)
    return status, change


def _content(files: dict[str, list]) -> dict[str, tuple]:
    return {path: (entry[0], entry[2]) for path, entry in files.items()}


def summarize(source: str | Path, before: dict[str, list], after: dict[str, list]) -> dict[str, Any]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(path for path in set(after) & set(before) if after[path][2] != before[path][2])
    return {
        "source": str(absolute(source)), "fingerprint": stable_hash(after), "files": len(after),
        "added": len(added), "changed": len(changed), "removed": len(removed),
        "bytes": sum(entry[0] for entry in after.values()),
        "examples": (added + changed + removed)[:_SHOWN_FILES],
    }


def watch_sources(config: Config, announce: Callable[[dict[str, Any]], object], stop: threading.Event,
                  complain: Callable[[str, Exception], object]) -> None:
    """Announce the changes still pending, then poll the watched sources each `serve.watch_interval_s` until
    `stop` is set: the `[serve] sources` when `serve.retrain_on` has "new_data" (kind "train"), and the
    `[serve] score_sources` (kind "score", with the `model_source` whose champion scores them).

    Args:
        config: the sources, the interval, and the data dir that keeps the watch state.
        announce: called once per settled change with its summary (see `summarize`), its `kind` and, for
            data to score, its `model_source`; again for a change no run completed (`again`: true).
        stop: set it to end the loop; it is checked between polls, so stopping takes at most one poll.
        complain: called with a source that could not be read and why; it is polled again next time,
            so one unreadable file does not end the watching of every source.
    """
    watched = watched_sources(config)
    data_dir, runs_dir = config.data_dir, config.runs_dir
    for source, extra in watched.items():
        announce_pending([source], data_dir, lambda change, extra=extra: announce({**change, **extra}))
    while not stop.is_set():
        for source, extra in watched.items():
            try:
                poll(source, data_dir, exclude=(runs_dir,), announce=lambda change, extra=extra: announce(
                    {**change, **extra}))
            except Exception as error:
                if not storage_failure(error):
                    raise
                complain(str(source), error)
        stop.wait(config.serve.watch_interval_s)


def watched_sources(config: Config) -> dict[str, dict[str, Any]]:
    """{source: what its changes carry besides their summary}, for every source the watcher looks at."""
    watched: dict[str, dict[str, Any]] = {}
    if "new_data" in config.serve.retrain_on:
        watched.update({entry.path: {"kind": "train"} for entry in config.serve.sources})
    for entry in config.serve.score_sources:
        watched[entry.path] = {"kind": "score", "model_source": config.serve.scored_by(entry)}
    return watched
