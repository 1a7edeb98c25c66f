"""Bucket URLs (`s3://`, `gs://`, `az://`, `abfs://`) opened through fsspec, with errors a user can act on.

fsspec, not pyarrow.fs, because locking needs conditional writes (`mode="create"`: S3 If-None-Match,
GCS if-generation-match, Azure If-None-Match), which pyarrow.fs does not offer, and because s3fs reads
the endpoint and credentials from the standard places (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, profiles)
through botocore, as every other AWS tool does; pyarrow's S3FileSystem ignores AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import errno
import os
import posixpath
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from mmpipe.errors import StorageError

# Where per-machine copies (mirrors, manifests) live; not a config key (it says where this machine keeps things).
CACHE_ENV = "MMPIPE_CACHE_DIR"
# URL scheme -> the fsspec implementation's package and the mmpipe extra that installs it.
SCHEMES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
           "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure")}
CREDENTIALS_HELP = {
    "s3fs": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and AWS_ENDPOINT_URL for a non-AWS endpoint",
    "gcsfs": "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`",
    "adlfs": "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_CONNECTION_STRING",
}


# The variables a storage secret may set (the standard ones the filesystems read; nothing else).
CREDENTIAL_VARIABLES = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
    "AWS_REGION", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
    "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
})


FILESYSTEM_CLASSES = {"s3fs": "S3FileSystem", "gcsfs": "GCSFileSystem", "adlfs": "AzureBlobFileSystem"}


def use_credentials(values: Any, origin: str) -> list[str]:
    """Set storage variables in this process (from a secret store, `origin` names it in errors); the filesystems
    made before forget theirs. Returns the names set; the values are never shown.

    Raises:
        StorageError: `values` is not an object of known variable names to strings.
    """
    if not isinstance(values, dict) or not all(isinstance(value, str) for value in values.values()):
        raise StorageError(f"{origin} must hold a JSON object of variable names to strings, e.g. "
                           '{"AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "..."}')
    unknown = sorted(set(values) - CREDENTIAL_VARIABLES)
    if unknown:
        raise StorageError(f"{origin} holds {', '.join(unknown)}, which are not storage variables; it may set "
                           f"{', '.join(sorted(CREDENTIAL_VARIABLES))}")
    os.environ.update(values)
    for module, filesystem in FILESYSTEM_CLASSES.items():
        if module in sys.modules:  # fsspec caches filesystems with the credentials they were made with
            getattr(sys.modules[module], filesystem).clear_instance_cache()
    return sorted(values)


def is_url(location: Any) -> bool:
    """Whether `location` names an object store (a string `scheme://...` with a scheme we read)."""
    return isinstance(location, str) and "://" in location and location.split("://", 1)[0].lower() in SCHEMES


def open_url(url: str):
    """(fsspec filesystem, path without the scheme) for a bucket URL; StorageError when its package is missing."""
    scheme = url.split("://", 1)[0].lower()
    package, extra = SCHEMES[scheme]
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except ImportError:
        raise StorageError(f"reading {scheme}:// URLs needs {package}: pip install 'mmpipe[{extra}]'") from None


def join(location: str | Path, *parts: str) -> str | Path:
    """`location`/part/...: a URL stays a URL, a path stays a Path."""
    if is_url(location):
        return posixpath.join(str(location).rstrip("/"), *parts)
    return Path(location).joinpath(*parts)


def url_name(url: str) -> str:
    """The last part of a URL's path (a bucket's name for a bare bucket)."""
    return posixpath.basename(url.rstrip("/")) or url.split("://", 1)[1].strip("/")


def list_objects(fs, root: str) -> dict[str, dict[str, Any]]:
    """{path relative to `root`: fsspec info} of every object under the prefix `root` ({} when there is none),
    as the store has it now: fsspec keeps listings per process, and a long-lived one (serve, watch) would
    otherwise miss what landed since."""
    prefix = root.rstrip("/") + "/"
    fs.invalidate_cache()
    return {name[len(prefix):]: info for name, info in fs.find(root, detail=True).items()
            if name.startswith(prefix) and info.get("type", "file") == "file"}


def read_heads(fs, paths: list[str], limit: int) -> dict[str, bytes | BaseException]:
    """The first `limit` bytes of each object, fetched at once (one ranged GET each); a failure is returned in
    its object's place, not raised."""
    fetched = fs.cat(paths, start=0, end=limit, on_error="return") if paths else {}
    # S3 answers a range read of a 0-byte object "range not satisfiable": the object is empty, not unreadable.
    return {path: b"" if getattr(result, "errno", None) == errno.EINVAL else result
            for path, result in fetched.items()}


def object_version(info: dict[str, Any]) -> str:
    """What changes when an object's bytes change: its ETag (S3, Azure), generation (GCS), else size and time."""
    for key in ("ETag", "etag", "generation", "md5Hash"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('LastModified') or info.get('last_modified') or info.get('updated')}"


# Packages whose exceptions are the store's or the network's (a refused connection is botocore's own
# EndpointConnectionError, not an OSError), never mmpipe's.
CLIENT_PACKAGES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "google", "azure"})


def storage_failure(error: BaseException) -> bool:
    """Whether `error` came from the store or the way to it (so: one line to the user, not a traceback)."""
    return isinstance(error, OSError) or type(error).__module__.split(".")[0] in CLIENT_PACKAGES


def storage_problem(url: str, error: BaseException) -> str:
    """One line saying what went wrong with `url` and what to do."""
    package = SCHEMES.get(url.split("://", 1)[0].lower(), ("s3fs", ""))[0]
    if isinstance(error, FileNotFoundError):
        return f"{url} does not exist (no such object or bucket)"
    if isinstance(error, PermissionError) or getattr(error, "errno", None) in (errno.EACCES, errno.EPERM):
        return (f"access to {url} was denied ({_first_line(error)}); check the credentials: "
                f"{CREDENTIALS_HELP[package]}")
    hint = "; check the endpoint and the network" if "connect" in str(error).lower() else ""
    return f"cannot use {url}: {type(error).__name__}: {_first_line(error)}{hint}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def absolute(location: str | Path) -> str | Path:
    """A URL as given (without a trailing `/`), a path made absolute: the one spelling to compare and hash."""
    return str(location).rstrip("/") if is_url(location) else Path(location).absolute()


def source_label(location: str | Path) -> str:
    """A source as people name it: its folder's (or prefix's) name, folder/file for a manifest."""
    if is_url(location):
        path = PurePosixPath(urlparse(str(location)).path.rstrip("/") or "/" + url_name(str(location)))
    else:
        path = PurePosixPath(Path(location).absolute().as_posix())
    return f"{path.parent.name}/{path.name}" if path.suffix and path.parent.name else path.name


def stem(location: str | Path) -> str:
    """A file's name without its suffix, or a folder's or prefix's name."""
    return Path(url_name(str(location))).stem if is_url(location) else Path(location).absolute().stem
