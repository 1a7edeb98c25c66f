"""Sources in a bucket: a manifest or a `LABEL/FILE` tree under a prefix, read where they are.

The source's prefix is listed once, when planning first needs it (sizes and ETags: what the chunk
fingerprints hold, so an unchanged bucket re-ingests from the chunk cache); a command that only
checks that the source opens does not list it. The manifest is copied to this
machine (one file, re-used while its ETag holds); images are never downloaded ahead: each chunk
fetches its own, many at a time, with the next window fetched while this one is cleaned.

The source-root rule holds for prefixes: a reference resolves inside the manifest's prefix or it is
quarantined as path_outside_root (`..` past the prefix, another bucket, a URL elsewhere).
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmpipe.config import ImageConfig
from mmpipe.errors import SourceError, StorageError
from mmpipe.files import atomic_path, stable_hash
from mmpipe.ingest.clean import Rejection
from mmpipe.ingest.reasons import Reason
from mmpipe.storage.mirror import cache_root
from mmpipe.storage.urls import list_objects, object_version, open_url, read_heads, storage_failure, storage_problem

# Images fetched at once per chunk worker (and one such window ahead): enough requests in flight to hide
# an object store's latency, few enough that memory stays at a window of images.
FETCH_WINDOW_ROWS = 32


@dataclass(frozen=True)
class BucketLocation:
    """Where a bucket source's image references resolve (small and picklable: it travels to chunk workers)."""

    url: str  # the source as given
    root: str  # the prefix references must stay inside, without the scheme ("bucket/set")

    @property
    def scheme(self) -> str:
        return self.url.split("://", 1)[0]

    def resolve(self, reference: str | None) -> str | Rejection:
        """The object path (no scheme) a reference names, or why it cannot be used."""
        if not reference or not reference.strip():
            return Rejection(Reason.IMAGE_MISSING, "the row has no image path")
        if "\0" in reference:
            return Rejection(Reason.IMAGE_MISSING, f"image path {reference[:200]!r} is not usable: it holds a NUL")
        if "://" in reference:
            scheme, rest = reference.split("://", 1)
            if scheme.lower() != self.scheme.lower():
                return Rejection(Reason.PATH_OUTSIDE_ROOT, f"image path {reference!r} is outside the source's bucket")
            wanted = posixpath.normpath("/" + rest)[1:]
        elif reference.startswith("/"):  # absolute within the source's bucket
            wanted = posixpath.normpath(f"/{self.root.split('/', 1)[0]}/{reference}")[1:]
        else:
            wanted = posixpath.normpath(f"/{self.root}/{reference}")[1:]
        if not wanted.startswith(self.root.rstrip("/") + "/"):
            return Rejection(Reason.PATH_OUTSIDE_ROOT, f"image path {reference!r} resolves outside the source root")
        return wanted

    def windows(self, rows: list[dict[str, Any]], config: ImageConfig) -> Iterator[tuple[list, BucketImages]]:
        """The rows in windows, each with its images fetched (the next window is fetched meanwhile)."""
        fs, _ = open_url(self.url)
        windows = [rows[start:start + FETCH_WINDOW_ROWS] for start in range(0, len(rows), FETCH_WINDOW_ROWS)]
        with ThreadPoolExecutor(1, thread_name_prefix="mmpipe-fetch") as ahead:
            pending = ahead.submit(self._fetch, fs, windows[0], config) if windows else None
            for position, window in enumerate(windows):
                images = pending.result()
                if position + 1 < len(windows):
                    pending = ahead.submit(self._fetch, fs, windows[position + 1], config)
                yield window, images

    def _fetch(self, fs, rows: list[dict[str, Any]], config: ImageConfig) -> BucketImages:
        resolved = {row["image"]: self.resolve(row["image"]) for row in rows}
        paths = sorted({path for path in resolved.values() if isinstance(path, str)})
        # One byte over the limit tells a too-large object from one at the limit, without reading it whole.
        fetched = read_heads(fs, paths, config.max_file_bytes + 1)
        return BucketImages({reference: path if isinstance(path, Rejection) else _judged(fetched[path], reference,
                                                                                           config, self.url)
                             for reference, path in resolved.items()})


@dataclass(frozen=True)
class BucketImages:
    """One window's images: reference -> bytes, or why there are none."""

    found: dict[str | None, bytes | Rejection]

    def read(self, reference: str | None) -> bytes | Rejection:
        return self.found[reference]


def _judged(result: bytes | BaseException, reference: str, config: ImageConfig, url: str) -> bytes | Rejection:
    """An object's bytes, or the row's reason; a store that cannot be reached at all is the run's problem, not
    the row's: StorageError (the chunks cleaned so far are cached for the next try)."""
    if isinstance(result, bytes):
        if len(result) > config.max_file_bytes:
            return Rejection(Reason.IMAGE_TOO_LARGE, f"object is over image.max_file_bytes = {config.max_file_bytes:,}")
        return result
    if isinstance(result, FileNotFoundError):
        return Rejection(Reason.IMAGE_MISSING, f"no object at {reference!r}")
    if isinstance(result, PermissionError):
        return Rejection(Reason.IMAGE_UNREADABLE, f"access to {reference!r} was denied")
    raise StorageError(f"cannot read the source's images: {storage_problem(url, result)}; run again when the "
                       "store answers (the chunks already cleaned are kept)")


@dataclass
class BucketListing:
    """The source prefix's objects: path relative to the source root -> "size:ETag"."""

    location: BucketLocation

    @functools.cached_property
    def objects(self) -> dict[str, str]:
        """Listed on first use; SourceError (one line) when the prefix cannot be listed."""
        fs, _ = open_url(self.location.url)
        try:
            listing = list_objects(fs, self.location.root)
        except Exception as error:
            if not storage_failure(error):
                raise
            raise SourceError(f"cannot list the source: {storage_problem(self.location.url, error)}") from None
        return {relative: f"{info.get('size')}:{object_version(info)}" for relative, info in listing.items()}

    def stat(self, reference: str | None) -> str:
        """What a chunk's fingerprint holds for a reference: the object's size and ETag, "missing", "none"."""
        if not reference:
            return "none"
        path = self.location.resolve(reference)
        if isinstance(path, Rejection):
            return "missing"
        return self.objects.get(path[len(self.location.root.rstrip("/")) + 1:], "missing")


def open_bucket_source(url: str) -> tuple[str, Path | None, BucketLocation]:
    """Look at a source URL: ("folder" or "manifest", the manifest's local copy, where references resolve).
    Raises SourceError when it is missing or unreadable."""
    fs, path = open_url(url)
    path = path.rstrip("/")
    fs.invalidate_cache()  # fsspec keeps listings per process: a long-lived one (serve) would miss new objects
    try:
        info = fs.info(path)
    except Exception as error:
        if not storage_failure(error):
            raise
        problem = storage_problem(url, error)
        if isinstance(error, FileNotFoundError):
            problem = f"source {problem}; pass a manifest (.csv, .jsonl, .parquet) or a prefix of LABEL/FILE objects"
        raise SourceError(problem) from None
    if info.get("type") == "directory":
        return "folder", None, BucketLocation(url=url, root=path)
    return "manifest", _local_copy(fs, path, url, info), BucketLocation(url=url, root=posixpath.dirname(path))


def _local_copy(fs, path: str, url: str, info: dict[str, Any]) -> Path:
    """The manifest on this machine (downloaded again only when its ETag changed)."""
    copy = cache_root() / "sources" / stable_hash([url, object_version(info)], 20) / posixpath.basename(path)
    if not copy.is_file():
        try:
            with atomic_path(copy) as temporary:
                fs.get_file(path, str(temporary))
        except Exception as error:
            if not storage_failure(error):
                raise
            raise SourceError(f"cannot read the manifest: {storage_problem(url, error)}") from None
    return copy


def tree_of(objects: dict[str, Any]) -> dict[str, list[str] | None]:
    """Objects (by path relative to the source root) as a folder tree's first two levels: name -> the names
    inside it (None: an object at the top, not a folder). Deeper objects show as their folder inside the
    label, as a subfolder would."""
    tree: dict[str, set[str] | None] = {}
    for relative in objects:
        top, _, rest = relative.partition("/")
        if not rest:
            tree.setdefault(top, None)
        else:
            tree[top] = (tree.get(top) or set()) | {rest.split("/", 1)[0]}
    return {name: None if entries is None else sorted(entries) for name, entries in sorted(tree.items())}


def read_small_objects(location: BucketLocation, references: list[str], limit: int) -> dict[str, bytes | OSError]:
    """The first `limit` bytes of each referenced object (sidecar captions), fetched at once."""
    fs, _ = open_url(location.url)
    paths = {reference: location.resolve(reference) for reference in references}
    fetched = read_heads(fs, sorted(path for path in paths.values() if isinstance(path, str)), limit)
    return {reference: fetched[path] if isinstance(path, str) else PermissionError(reference)
            for reference, path in paths.items()}
