"""Notice new data in a source: fingerprint its files, report a change once the burst has settled.

A poll lists the source's files (a manifest's folder, or a `LABEL/FILE` tree) with sizes and
mtimes, and hashes only files it has not seen with that size and mtime. A change is reported when
the listing differs from the last one reported *and* has not moved since the previous poll: files
arriving over several polls give one report, after the last file landed. State lives in
DATA/watch/<source-hash>.json, so the watcher itself can restart at any time.

`watch_sources` is the watcher: one long-lived loop over the configured sources (in `mmpipe serve`'s
process, or `mmpipe watch` next to a worker) that hands each settled change to a callback; the
caller decides what a change means (the CLI emits a Prefect event), so this module stays plain.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmpipe.config import Config
from mmpipe.files import hold_lock, sha256_file, stable_hash, write_json_atomic

_SHOWN_FILES = 20


def source_root(source: Path) -> Path:
    """The folder whose files make up a source: a manifest's folder, or the tree itself."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def source_key(source: Path) -> str:
    return stable_hash(str(Path(source).absolute()))


def fingerprint(source: Path, known: dict[str, list] | None = None, exclude: tuple[Path, ...] = ()) -> dict[str, list]:
    """{relative path: [size, mtime_ns, sha256]} of every file under the source's root.

    A file whose size and mtime match `known` keeps its known hash instead of being read again.
    Folders in `exclude` (mmpipe's own data and runs dirs, when they sit inside the source's
    folder) are skipped: a run must not look like new data. A manifest that does not exist yet
    has no files.
    """
    source = Path(source)
    if not source.exists():
        return {}
    root, known = source_root(source), known or {}
    skipped = {os.path.realpath(path) for path in exclude}
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


def poll(source: Path, data_dir: Path, exclude: tuple[Path, ...] = (),
         announce: Callable[[dict[str, Any]], object] | None = None) -> tuple[str, dict[str, Any] | None]:
    """One look at `source`: ("changed", summary to announce), ("arriving", None) while files are
    still moving, or ("unchanged", None).

    A change is handed to `announce` before it is recorded as reported: if `announce` raises or the
    process dies in between, the next poll reports it again (announced twice rather than never).
    Prefect's `emit_event` queues the event and sends it from a background worker, so a server that
    is down when it sends is Prefect's to retry, not seen here.
    """
    state_path = Path(data_dir) / "watch" / f"{source_key(source)}.json"
    with hold_lock(state_path.with_suffix(".lock")):  # two watchers must not both report one change
        return _poll(source, Path(data_dir), state_path, exclude, announce)


def _poll(source: Path, data_dir: Path, state_path: Path, exclude: tuple[Path, ...],
          announce: Callable[[dict[str, Any]], object] | None) -> tuple[str, dict[str, Any] | None]:
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"reported": {}, "seen": None}
    files = fingerprint(source, state["seen"] or state["reported"], (Path(data_dir), *exclude))
    settled = files == state["seen"]
    new = _content(files) != _content(state["reported"])
    status = ("changed" if files else "unchanged") if settled and new else "arriving" if new else "unchanged"
    change = summarize(source, state["reported"], files) if status == "changed" else None
    if change is not None and announce is not None:
        announce(change)
    if settled:
        state["reported"] = files  # a touched file with the same bytes is not new data
    state["seen"] = files
    write_json_atomic(state_path, state, pretty=False)
    return status, change


def _content(files: dict[str, list]) -> dict[str, tuple]:
    return {path: (entry[0], entry[2]) for path, entry in files.items()}


def summarize(source: Path, before: dict[str, list], after: dict[str, list]) -> dict[str, Any]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(path for path in set(after) & set(before) if after[path][2] != before[path][2])
    return {
        "source": str(Path(source).absolute()), "fingerprint": stable_hash(after), "files": len(after),
        "added": len(added), "changed": len(changed), "removed": len(removed),
        "bytes": sum(entry[0] for entry in after.values()),
        "examples": (added + changed + removed)[:_SHOWN_FILES],
    }


def watch_sources(config: Config, announce: Callable[[dict[str, Any]], object], stop: threading.Event,
                  complain: Callable[[str, OSError], object]) -> None:
    """Poll every `[serve] sources` entry each `serve.watch_interval_s` until `stop` is set.

    Args:
        config: the sources, the interval, and the data dir that keeps the watch state.
        announce: called once per settled change with its summary (see `summarize`).
        stop: set it to end the loop; it is checked between polls, so stopping takes at most one poll.
        complain: called with a source that could not be read and why; it is polled again next time,
            so one unreadable file does not end the watching of every source.
    """
    sources = [Path(entry.path) for entry in config.serve.sources]
    data_dir, runs_dir = Path(config.data_dir), Path(config.runs_dir)
    while not stop.is_set():
        for source in sources:
            try:
                poll(source, data_dir, exclude=(runs_dir,), announce=announce)
            except OSError as error:
                complain(str(source), error)
        stop.wait(config.serve.watch_interval_s)
