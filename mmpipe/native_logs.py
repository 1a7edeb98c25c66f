"""TensorFlow's C++ log lines kept off a process's stderr (the terminal, or a Prefect worker's output).

TensorFlow's C++ logging goes through Abseil, which writes everything logged before
`absl::InitializeLog()` to stderr whatever TF_CPP_MIN_LOG_LEVEL says (abseil-cpp#1718), and
TensorFlow never calls it: `import tensorflow` alone prints six lines (oneDNN, no CUDA driver).
So the native stderr (file descriptor 2) is read by a thread that drops those lines and passes
everything else on; Python's own `sys.stderr` writes straight to where stderr went before.
"""

from __future__ import annotations

import os
import re
import sys
import threading

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
