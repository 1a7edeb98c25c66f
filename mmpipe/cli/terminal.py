"""What reaches the terminal: mmpipe's own lines, and nothing from the libraries unless asked for.

By default (no `--verbose`, no MMPIPE_DEBUG) TensorFlow's C++ log lines do not reach the terminal,
Prefect's console handler is silent (every log line still reaches the Prefect API and its UI),
library warnings are ignored, and mmpipe's own log records (`mmpipe.*` loggers: a lock being
waited for, a stale file removed) print as `mmpipe: ...` lines. Verbose mode leaves every library
as it is.
The C++ lines are dropped by `mmpipe.native_logs` (why an environment variable is not enough is
written there).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from mmpipe.native_logs import filter_native_stderr

QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ lines logged after Abseil is initialized
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",  # flow and task logs still go to the API
    "PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL": "CRITICAL",  # Prefect's own services (event workers ...)
}


def configure_terminal(verbose: bool) -> None:
    """Call first thing, before any library is imported. Once per process: a second call (tests run
    `main()` many times) only renews mmpipe's own handler."""
    if not verbose:
        filter_native_stderr()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mmpipe: %(message)s"))
    handler.set_name("mmpipe-terminal")
    own = logging.getLogger("mmpipe")
    for old in [h for h in own.handlers if h.get_name() == "mmpipe-terminal"]:
        own.removeHandler(old)
    own.addHandler(handler)
    own.setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    warnings.simplefilter("ignore")  # library deprecation and usage warnings mean nothing to a user here
    # With no handler anywhere, Python's last-resort handler would print any library's warnings.
    logging.getLogger().addHandler(logging.NullHandler())
    for name in ("tensorflow", "absl", "great_expectations", "h5py", "distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_prefect_api() -> None:
    """When PREFECT_API_URL is set, fail in one line (and a second) if nothing answers there."""
    from mmpipe.errors import MmpipeError

    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        return
    import httpx

    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise MmpipeError(f"cannot reach the Prefect API at {url} ({type(error).__name__}: {error}): start it "
                          "(`prefect server start`), fix PREFECT_API_URL, or unset it to use a temporary server"
                          ) from None
