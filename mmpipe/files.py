"""Atomic writes and content hashes: a reader never sees half a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HASH_BLOCK_BYTES = 1 << 20


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
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    temp = Path(temp_name)
    os.chmod(temp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
    try:
        yield temp
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing), waiting for other holders.

    `on_wait` is called once if the lock is held elsewhere, before waiting (to say so).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    if content.get("format", 1) > current_format:
        raise error(f"{path} was written by a newer mmpipe (format {content['format']}); upgrade mmpipe")
    try:
        return model(**{**content, "format": current_format, **extra})
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise error(f"{path} is damaged ({where}: {first['msg']}); {fix}") from None
