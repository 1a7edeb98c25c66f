"""Chunk workers: the threads (default) or processes that clean chunks in parallel.

Threads share one interpreter: Pillow, hashlib and Arrow release the GIL for their heavy work, but
the Python around them (a row's checks, text cleaning) does not. Worker processes run that Python
on their own cores. Measured on 2 cores (docs/benchmarks.md, bench/ingest.py): on image-bound rows
(300-800 px photos) threads are as fast or faster, because a process pool costs a fixed start that
the GIL never did; with long captions on small images (~4 KB of HTML per caption) processes clean
1.03x as many rows, more on larger jobs. So threads by default, processes with
`ingest.parallel = "processes"`.

Worker processes are forked from a forkserver that has already imported the cleaning code: a clean
process (no threads of Prefect's or TensorFlow's inherited mid-lock, as a plain fork would).
Chunks are cleaned independently and written to the chunk cache under their content key, so the
shards are the same bytes whichever workers cleaned them (tested: processes, threads, one worker).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from pathlib import Path

from mmpipe.config import Config
from mmpipe.errors import DataDirError
from mmpipe.ingest.chunks import ChunkPlan, ChunkResult, process_chunk
from mmpipe.ingest.clean.record import SourceLocation

# Imported once in the forkserver, so every worker starts with them loaded.
_PRELOAD = ["mmpipe.ingest.forkserver_preload"]
_PARENT_CHECK_S = 0.5


def _main_importable() -> bool:
    """Whether worker processes can import this program's main module, as multiprocessing makes them
    do: a script file, a module (`python -m`), or none (an interactive session); not `python - < file`."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return getattr(main, "__spec__", None) is not None or path is None or os.path.isfile(path)


def _start_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group; only the parent acts on it (it stops handing out
    # chunks and waits for the ones being cleaned), so no worker dies halfway through a chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker holds both ends of its task queue, so a parent killed with -9 never closes it: the
    # worker would wait forever. It watches the parent instead and leaves when the parent is gone.
    threading.Thread(target=_exit_with, args=(parent,), name="mmpipe-parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    while True:
        time.sleep(_PARENT_CHECK_S)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)  # nothing to clean up: chunks are published whole or not at all


# The workers that `clean_chunk` hands chunks to, where a caller set them (the ingest flow, whose
# `clean-chunk` tasks run on threads in copies of the submitting context).
_HANDED_TO: ContextVar[Executor | None] = ContextVar("mmpipe_chunk_workers", default=None)


@contextlib.contextmanager
def handing_chunks_to(workers: Executor) -> Iterator[None]:
    """While open, `clean_chunk` in this context (and in contexts copied from it) runs on `workers`."""
    token = _HANDED_TO.set(workers)
    try:
        yield
    finally:
        _HANDED_TO.reset(token)


def clean_chunk(chunk: ChunkPlan, location: SourceLocation, config: Config, cache_dir: Path,
                labelled: bool = True) -> ChunkResult:
    """`process_chunk`, on the workers handed to (see `handing_chunks_to`), else in this thread."""
    workers = _HANDED_TO.get()
    if workers is None:
        return process_chunk(chunk, location, config, cache_dir, labelled=labelled)
    with worker_deaths():
        return workers.submit(process_chunk, chunk, location, config, cache_dir, labelled=labelled).result()


@contextlib.contextmanager
def worker_deaths() -> Iterator[None]:
    """Around submitting to chunk workers and waiting on them: a worker that died (killed, out of
    memory) is one clear error, whether the pool broke before a submit or while a chunk was cleaned."""
    try:
        yield
    except BrokenProcessPool:
        raise DataDirError("a chunk worker process died (killed, out of memory, or your script's code not under "
                           "`if __name__ == \"__main__\":`, as worker processes import it?): run it again; the "
                           "chunks already cleaned are reused, and `ingest.workers` or `ingest.chunk_rows` lower "
                           "the memory it needs") from None


@contextlib.contextmanager
def chunk_workers(count: int, kind: str) -> Iterator[Executor]:
    """An executor of `count` chunk workers ("processes" or "threads"), shut down on the way out.

    On an error or Ctrl-C, chunks not yet started are cancelled and the ones being cleaned finish
    (each is one chunk: seconds at most); the cache only ever holds whole chunks. If this process is
    killed, the workers see their task queue close and exit.
    """
    if kind == "processes" and not _main_importable():
        logging.getLogger(__name__).debug("chunk workers are threads: the main module (%s) cannot be imported by "
                                          "worker processes", getattr(sys.modules["__main__"], "__file__", None))
        kind = "threads"
    if kind == "threads":
        executor: Executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="mmpipe-chunk")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        executor = ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_start_worker,
                                       initargs=(os.getpid(),))
    try:
        yield executor
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
