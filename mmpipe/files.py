"""Atomic writes, locks and content hashes: a reader never sees half a file, two writers never mix.

Every file mmpipe publishes goes through `commit` (a rename of a finished temporary file), which
is also the one place where tests inject a kill -9 (FAULT_ENV): between any two writes, the
data dir and the run store must be in their old or their new state.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HASH_BLOCK_BYTES = 1 << 20
# Temporary files are named `.<final name>.<random>.tmp<suffix>`: recognizable, and hidden.
TEMP_MARK = ".tmp"
# Test hook: "N" kills this process (SIGKILL) at the Nth commit point, "log:PATH" appends every
# commit point to PATH. Each commit has two points: before and after its rename.
FAULT_ENV = "MMPIPE_FAULT_KILL_AT"
_commit_points = itertools.count(1)  # per process, which is what a kill counts in


def fault_point(stage: str, final: Path | str) -> None:
    """A place a test may kill this process (see FAULT_ENV): every commit, and every wave of a bucket publish."""
    hook = os.environ.get(FAULT_ENV)
    if not hook:
        return
    point = next(_commit_points)
    if hook.startswith("log:"):
        with open(hook[4:], "a", encoding="utf-8") as log:
            log.write(f"{point} {stage} {final}\n")
    elif point == int(hook):
        os.kill(os.getpid(), signal.SIGKILL)


def commit(temp: Path, final: Path) -> None:
    """Publish a finished temporary file (or folder) under its final name, atomically."""
    fault_point("before", final)
    os.replace(temp, final)
    fault_point("after", final)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(value: Any, length: int = 16) -> str:
    """Hash of a JSON-able value that does not depend on dict order or the Python process."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; commit it onto `final` only if the block succeeds.

    `suffix` ends the temporary name, for writers that insist on one (Keras wants `.keras`).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMP_MARK + suffix, dir=final.parent)
    os.close(fd)
    temp = Path(temp_name)
    os.chmod(temp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
    try:
        yield temp
        commit(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files a killed writer left under `folder`; call only while holding its lock."""
    removed = 0
    for path in Path(folder).rglob(f".*{TEMP_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this host has this pid (another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def hold_lock(path: Path, on_wait: Callable[[], None] | None = None, shared: bool = False,
              wait: bool = True) -> Iterator[None]:
    """Hold an advisory lock on `path` (created if missing), waiting for other holders. Exclusive
    by default; `shared` holders (readers) exclude only exclusive ones (writers).

    `on_wait` is called once if the lock is held elsewhere, before waiting (to say so); with
    `wait=False`, BlockingIOError is raised instead. Locks are released when the process dies, so a
    kill -9 never leaves one behind.
    """
    import fcntl

    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise
            if on_wait:
                on_wait()
            fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def disk_full_named(folder: Path | str, then: str, error: type[Exception]) -> Iterator[None]:
    """A full disk (or quota) inside the block is `error` naming the folder whose disk it is, and what to do
    `then`: "No space left on device" alone names neither."""
    import errno

    try:
        yield
    except OSError as problem:
        if problem.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f": {problem.filename}" if problem.filename else ""
        raise error(f"the disk holding {Path(folder).absolute()} is full ({problem.strerror}{where}): free some "
                    f"space, then {then}") from None


def json_text(value: Any, pretty: bool = True) -> str:
    """JSON as mmpipe writes it: pretty (indented, sorted keys) for people, compact for caches."""
    return json.dumps(value, indent=2 if pretty else None, sort_keys=pretty, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, value: Any, pretty: bool = True) -> None:
    """Write JSON via a temp file and a rename."""
    with atomic_path(path) as temp:
        temp.write_text(json_text(value, pretty), encoding="utf-8")



def read_record(path: Path, model: type, current_format: int, error: type[Exception], missing: str, fix: str,
                **extra: Any):
    """Parse a versioned JSON record (dataset.json, run.json) into the pydantic `model`.

    Older formats are read as the current one (new fields have defaults); every problem is an
    `error` naming the file and ending in `fix`: `missing` when the file does not exist.
    """
    from pydantic import ValidationError

    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, ValueError) as problem:
        raise error(f"cannot read {path}: {problem}; {fix}") from None
    if not isinstance(content, dict):
        raise error(f"{path} is not a JSON object; {fix}")
    if not isinstance(content.get("format", 1), int):
        raise error(f"{path} is damaged (format: {content['format']!r} is not a format number); {fix}")
    if content.get("format", 1) > current_format:
        raise error(f"{path} was written by a newer mmpipe (format {content['format']}); upgrade mmpipe")
    try:
        return model(**{**content, "format": current_format, **extra})
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise error(f"{path} is damaged ({where}: {first['msg']}); {fix}") from None
