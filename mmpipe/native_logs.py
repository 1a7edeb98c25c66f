"""What a process of mmpipe's prints on stderr (the terminal, or a Prefect worker's output): mmpipe's own lines,
and nothing from the libraries unless asked for (`--verbose`, MMPIPE_DEBUG): TensorFlow's C++ log lines dropped,
Prefect's console handler silent (every log line still reaches the Prefect API and its UI), library warnings
ignored, mmpipe's own log records (`mmpipe.*` loggers: a lock being waited for, a stale file removed) printed as
`mmpipe: ...` lines (configure_stderr).

TensorFlow's C++ logging goes through Abseil, which writes everything logged before
`absl::InitializeLog()` to stderr whatever TF_CPP_MIN_LOG_LEVEL says (abseil-cpp#1718), and
TensorFlow never calls it: `import tensorflow` alone prints six lines (oneDNN, no CUDA driver).
So the native stderr (file descriptor 2) is read by a thread that drops those lines and passes
everything else on; Python's own `sys.stderr` writes straight to where stderr went before.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

# Abseil/TensorFlow native log lines ("I0000 00:00:17.. 1234 port.cc:153] ..."), the banner before
# them, and the second line of TensorFlow's CPU-feature notice.
NATIVE_LOG_LINE = re.compile(rb"^([IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w./-]+:\d+\] |WARNING: All log messages before "
                             rb"absl::InitializeLog\(\)|To enable the following instructions: )")


def filter_native_stderr() -> bool:
    """Send file descriptor 2 through a filter that drops native log lines (fatal ones pass); call before
    TensorFlow is imported. Once per process, and only for the process's real stderr: a caller that captured
    stderr (a test) sees it all. Returns whether this call installed it."""
    if sys.stderr is not sys.__stderr__ or getattr(sys.stderr, "mmpipe_filtered", False):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the lines logged after Abseil is initialized
    target = os.dup(2)
    sys.stderr = open(target, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace",  # noqa: SIM115
                      closefd=False)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with open(read_end, "rb", buffering=0) as native:
            for line in native:
                if not NATIVE_LOG_LINE.match(line):
                    os.write(target, line)

    threading.Thread(target=forward, name="mmpipe-native-stderr", daemon=True).start()
    sys.stderr.mmpipe_filtered = True
    sys.__stderr__ = sys.stderr
    return True


QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ lines logged after Abseil is initialized
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",  # flow and task logs still go to the API
    "PREFECT_LOGGING_HANDLERS_DEBUG_LEVEL": "CRITICAL",  # Prefect's own services (event workers ...)
}


def configure_stderr(verbose: bool) -> None:
    """What a process of mmpipe's prints (the command, a trial's worker process): mmpipe's own log records as
    `mmpipe: ...` lines and, unless `verbose`, nothing from the libraries. Call first thing, before any library is
    imported. Once per process: a second call (tests run `main()` many times) only renews mmpipe's own handler."""
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
