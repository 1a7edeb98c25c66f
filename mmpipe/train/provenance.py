"""What a run records about where it ran, so its numbers can be traced and reproduced: the code's commit, the
package versions, and the machine (the CPU, its instruction-set flags, the thread settings)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def git_commit() -> str | None:
    """The commit of mmpipe's own code when it runs from a git checkout (an editable install), else None; never the
    commit of the working directory, nor of a repository an installed copy happens to sit in (a venv in a project)."""
    source = Path(__file__).resolve().parents[2]  # mmpipe/train/provenance.py -> the checkout's root
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode or len(lines) != 2 or Path(lines[0]).resolve() != source:
        return None
    return lines[1]


def package_versions() -> dict[str, str]:
    import keras
    import numpy
    import pyarrow
    import tensorflow

    return {"python": platform.python_version(), "tensorflow": tensorflow.__version__, "keras": keras.__version__,
            "numpy": numpy.__version__, "pyarrow": pyarrow.__version__,
            "os": f"{platform.system()} {os.uname().release}"}


# The CPU features that change which kernels TensorFlow runs, and so the last bits of a run's numbers.
NUMERIC_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "neon")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS")


def machine() -> dict[str, Any]:
    """What a rerun must match to give the same numbers: the CPU, its instruction-set flags, and the thread
    settings (same config and machine give the same metrics; another CPU may differ in the last bits)."""
    import tensorflow as tf

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    threading = tf.config.threading
    return {"cpu": model, "cpu_flags": [flag for flag in NUMERIC_CPU_FLAGS if flag in flags],
            "cpu_count": os.cpu_count(), "intra_op_threads": threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": threading.get_inter_op_parallelism_threads(),
            "environment": {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}}
