"""Several training workers on this machine: a multi-worker run tried out before a cluster, and tested.

Each worker is `python -m mmpipe ...` with its own TF_CONFIG (loopback ports the OS picked) and
train.strategy = multi_worker; worker 0 is the chief.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """`count` loopback ports that were free a moment ago (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for handle in sockets:
            handle.bind(("127.0.0.1", 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def local_worker_environments(count: int) -> list[dict[str, str]]:
    """The environment of each of `count` workers on this host: TF_CONFIG on loopback ports, and
    train.strategy = multi_worker."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
             "MMPIPE_TRAIN__STRATEGY": "multi_worker"} for index in range(count)]


def launch_local_workers(count: int, arguments: list[str], *, env: dict[str, str] | None = None,
                         logs: Path | None = None, timeout: float | None = None,
                         capture: bool = True) -> subprocess.CompletedProcess:
    """Run `mmpipe ARGUMENTS` as `count` workers of one multi-worker run on this host.

    The chief's output is returned (with `capture`; else it goes where this process's goes); worker N's
    goes to `logs`/worker-N.log (or nowhere). When a worker fails, or `timeout` seconds pass, the others
    are stopped: they would wait for it.

    Returns:
        the chief's output, with the first non-zero exit status among the workers (124 after a timeout).
    """
    base = {**os.environ, **(env or {})}
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr, contextlib.ExitStack() as files:
        processes = []
        for index, extra in enumerate(local_worker_environments(count)):
            if index == 0:
                out, err = (stdout, stderr) if capture else (None, None)
            elif logs is not None:
                out = err = files.enter_context(open(logs / f"worker-{index}.log", "wb"))
            else:
                out = err = subprocess.DEVNULL
            processes.append(subprocess.Popen([sys.executable, "-m", "mmpipe", *arguments], env={**base, **extra},
                                              stdout=out, stderr=err))
        deadline = None if timeout is None else time.monotonic() + timeout
        code = None  # the first failure's exit status: the workers stopped after it only report being stopped
        try:
            while code is None and any(process.poll() is None for process in processes):
                code = next((process.returncode for process in processes if process.poll()), None)
                if code is None and deadline is not None and time.monotonic() > deadline:
                    code = 124
                time.sleep(0.2)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if code is None:
            code = next((process.returncode for process in processes if process.returncode), 0)
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(processes[0].args, code, stdout.read().decode(errors="replace"),
                                           stderr.read().decode(errors="replace"))
